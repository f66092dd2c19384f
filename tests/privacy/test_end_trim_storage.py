"""End-of-ride trimming through the sink: the last minutes of a ride reach no table of data."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from bikesense.runtimes import EmbeddedConfig
from firmware_protocol import encode_readings
from ingest.admission import Admitted
from simulators.publisher import MqttPublisher
from storage.held import held_count
from storage.kits import MasterKey, register_kit
from stream.core.partials import Metric
from stream.core.privacy import PrivacyConfig
from stream.core.process import CoreConfig, process_batch
from stream.core.qa import QaFlag
from stream.core.state import KitStates
from stream.maintenance import MaintenanceConfig, run_maintenance
from stream.sink import PostgresSink, WriteOutcome
from tests.runtime_harness import running, scalar, wait_for
from tests.stream.stream_factories import T0_MS, riding

pytestmark = pytest.mark.postgres

KIT = 6262
TRIM_S = 60
HOUR_MS = 3_600_000
#: A PM2.5 value only the readings of a ride's last minute carry.
MARKER = 654.3


class Feeder:
    def __init__(self, url: str) -> None:
        self.config = CoreConfig(privacy=PrivacyConfig(trim_end_s=TRIM_S))
        self.sink = PostgresSink(url, self.config)
        self.states: KitStates = {}

    def feed(self, readings: np.ndarray) -> WriteOutcome:
        received = int(readings["ts_ms"].max())
        out = process_batch(readings, received, self.states, self.config)
        self.states = out.states
        admitted = Admitted(readings, np.full(len(readings), received, dtype=np.int64))
        return self.sink.write(admitted, out.to_store(), out.states)


def _ride(n: int, t0_ms: int, seq0: int) -> np.ndarray:
    rows = riding(n, t0_ms=t0_ms, seq0=seq0)
    rows["pm25_ugm3"][-TRIM_S:] = MARKER  # 1 Hz: the last 60 readings are the last minute
    return rows


def _marker_anywhere(url: str) -> int:
    return int(
        scalar(
            url,
            "SELECT (SELECT count(*) FROM readings WHERE pm25_ugm3 > 600)"
            " + (SELECT count(*) FROM window_partials WHERE metric = %s"
            " AND max > 600)",
            (int(Metric.PM25),),
        )
    )


def test_the_last_minute_of_a_ride_is_held_then_trimmed(migrated_database_url: str) -> None:
    feeder = Feeder(migrated_database_url)
    first = _ride(600, T0_MS, 0)
    try:
        # The ride so far, in two batches: the newest minute waits in the holding table.
        a = feeder.feed(first[:300])
        b = feeder.feed(first[300:])
        assert (a.inserted, a.held) == (240, 60)
        assert (b.inserted, b.held, b.trimmed_end) == (300, 60, 0)
        # Frames not acked in time come again: nothing is stored or held twice.
        again = feeder.feed(first[300:])
        assert (again.inserted, again.held) == (0, 60)
        url = migrated_database_url
        assert scalar(url, "SELECT count(*) FROM readings") == 540
        assert scalar(url, "SELECT count(*) FROM readings_held") == 60
        # Held readings are in no aggregate either: PM2.5 counts at one resolution and
        # window add up to the stored readings past the sensor's warm-up (480 of 540).
        warm = scalar(
            url, "SELECT count(*) FROM readings WHERE qa_flags & %s = 0", (int(QaFlag.WARMING_UP),)
        )
        assert warm == 480
        assert (
            scalar(
                url,
                "SELECT sum(n) FROM window_partials WHERE metric = %s"
                " AND resolution = 10 AND window_s = 3600",
                (int(Metric.PM25),),
            )
            == warm
        )
        assert _marker_anywhere(url) == 0
        # The kit rides again after a pause longer than the ride gap: the first ride is
        # over, its last minute goes without ever reaching readings or aggregates.
        c = feeder.feed(riding(200, t0_ms=T0_MS + HOUR_MS, seq0=100))
        assert (c.inserted, c.held, c.trimmed_end) == (140, 60, 60)
        assert scalar(url, "SELECT count(*) FROM readings") == 680
        assert scalar(
            url,
            "SELECT max(ts) FROM readings WHERE ts < %s",
            (datetime.fromtimestamp((T0_MS + HOUR_MS) / 1000, UTC),),
        ) == datetime.fromtimestamp((T0_MS + 539_000) / 1000, UTC)
        assert _marker_anywhere(url) == 0
        with psycopg.connect(url, autocommit=True) as conn:
            assert held_count(conn) == 60
            # A kit that never sends again: maintenance ends its ride after the ride memory.
            config = MaintenanceConfig(held_expiry=timedelta(days=2))
            # (Frames were "received" at their readings' times, in June 2026.)
            t0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
            soon = run_maintenance(conn, config, now=t0 + timedelta(days=1))
            assert soon.held_deleted == 0
            later = run_maintenance(conn, config, now=t0 + timedelta(days=3))
            assert later.held_deleted == 60
            assert held_count(conn) == 0
    finally:
        feeder.sink.close()


def test_the_sink_refuses_to_trim_without_kit_states(migrated_database_url: str) -> None:
    feeder = Feeder(migrated_database_url)
    rows = riding(10)
    out = process_batch(rows, T0_MS, {}, feeder.config)
    try:
        with pytest.raises(ValueError, match="kit states"):
            feeder.sink.write(Admitted(rows, np.zeros(10, dtype=np.int64)), out.to_store())
    finally:
        feeder.sink.close()


@pytest.mark.mqtt
def test_the_embedded_runtime_trims_ride_ends_over_mqtt(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    master = MasterKey.generate()
    with psycopg.connect(url, autocommit=True) as conn:
        secret = register_kit(conn, master, KIT).secret
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
        core=CoreConfig(privacy=PrivacyConfig(trim_end_s=TRIM_S)),
    )
    start = (int(time.time()) // 3600 - 4) * 3_600_000
    # Two rides an hour apart, 5 min each at 1 Hz, as frames of 10 readings; each ride's
    # last minute carries the marker value.
    rides = [_ride(300, start, 0), _ride(300, start + HOUR_MS, 100)]
    for ride in rides:
        ride["kit_id"] = KIT
    frames = [
        encode_readings(KIT, 1, int(ride["seq"][i]), ride[i : i + 10], secret)
        for ride in rides
        for i in range(0, 300, 10)
    ]
    with running(config, master):
        publisher = MqttPublisher(mqtt_url, topic_root=root)
        publisher.connect()
        for payload in frames:
            publisher.publish(f"{root}/kits/{KIT}/up", payload)
        publisher.close()
        # Ride one: all but its last minute. Ride two: all but its last minute, which
        # waits in the holding table as long as the kit might still be riding.
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM readings") == 480, what="480 readings stored"
        )
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM readings_held") == 60,
            what="the second ride's last minute held",
        )
    assert _marker_anywhere(url) == 0
    assert scalar(url, "SELECT count(DISTINCT ride_id) FROM readings") == 2
