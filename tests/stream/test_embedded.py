"""The embedded runtime end to end: real Mosquitto in, real PostgreSQL out."""

from __future__ import annotations

import math
import time

import numpy as np
import psycopg
import pytest

from bikesense.runtimes import EmbeddedConfig
from firmware_protocol import empty_readings, encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.partials import Metric
from tests.runtime_harness import running, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

KIT = 4242
CENTRE = (52.1290, 4.6560)  # Alphen aan den Rijn


def _frame_readings(start_ms: int, n: int, *, pm25: float, noise_db: float) -> np.ndarray:
    r = empty_readings(n)
    r["ts_ms"] = start_ms + np.arange(n) * 5000
    r["lat_deg"] = CENTRE[0] + np.arange(n) * 1e-5
    r["lon_deg"] = CENTRE[1]
    r["gnss_fix"] = 2
    r["hdop"] = 0.9
    r["satellites"] = 9
    r["speed_mps"] = 4.0
    r["pm1_ugm3"] = pm25 * 0.6
    r["pm25_ugm3"] = pm25
    r["pm10_ugm3"] = pm25 * 1.5
    r["noise_laeq_db"] = noise_db
    r["noise_lamax_db"] = noise_db + 6
    r["interval_ms"] = 5000
    r["temperature_c"] = 12.0
    r["humidity_pct"] = 60.0
    return r


@pytest.fixture
def kit_secret(migrated_database_url: str) -> tuple[MasterKey, bytes]:
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        creds = register_kit(conn, master, KIT)
    return master, creds.secret


def test_frames_arrive_once_with_exact_aggregates(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    kit_secret: tuple[MasterKey, bytes],
) -> None:
    master, secret = kit_secret
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=migrated_database_url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
    )
    # Inside one minute: two frames at 60 dB and 80 dB for equal time → LAeq 77.0 dB.
    minute_ms = (int(time.time()) // 3600 - 2) * 3_600_000  # a whole hour, two hours ago
    frames = [
        encode_readings(KIT, 1, 1, _frame_readings(minute_ms, 6, pm25=10.0, noise_db=60.0), secret),
        encode_readings(
            KIT, 1, 2, _frame_readings(minute_ms + 30_000, 6, pm25=20.0, noise_db=80.0), secret
        ),
    ]
    # A late frame, buffered on the kit ten hours: it must land in its own windows.
    late_ms = minute_ms - 10 * 3_600_000
    late = encode_readings(KIT, 1, 3, _frame_readings(late_ms, 4, pm25=5.0, noise_db=50.0), secret)

    with running(config, master):
        publisher = MqttPublisher(mqtt_url, topic_root=root)
        publisher.connect()
        for payload in [*frames, frames[0], late]:  # frames[0] twice: a duplicate publish
            publisher.publish(f"{root}/kits/{KIT}/up", payload)
        publisher.close()
        wait_for(
            lambda: scalar(migrated_database_url, "SELECT count(*) FROM readings") == 16,
            what="16 readings stored",
        )
        wait_for(
            lambda: scalar(
                migrated_database_url,
                "SELECT last_seen_at IS NOT NULL FROM kits WHERE kit_id = %s",
                (KIT,),
            ),
            what="the kit's last-seen time",
        )

    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (16,)
        # Every reading once: the duplicate publish changed nothing.
        assert conn.execute(
            "SELECT count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
        ).fetchone() == (16,)
        rows = conn.execute(
            "SELECT metric, sum(n), sum(sum), sum(energy), sum(duration_s) FROM window_partials"
            " WHERE resolution = 7 AND window_s = 3600 AND window_start = to_timestamp(%s / 1000.0)"
            " GROUP BY metric ORDER BY metric",
            (minute_ms,),
        ).fetchall()
        by_metric = {Metric(m): (n, s, e, d) for m, n, s, e, d in rows}
        n, total, _, _ = by_metric[Metric.PM25]
        assert n == 12
        assert total == pytest.approx(6 * 10.0 + 6 * 20.0)
        _, _, energy, duration = by_metric[Metric.NOISE]
        assert 10 * math.log10(energy / duration) == pytest.approx(77.0, abs=0.05)
        late_n = conn.execute(
            "SELECT sum(n) FROM window_partials WHERE metric = %s AND resolution = 7"
            " AND window_s = 3600 AND window_start = to_timestamp(%s / 1000.0)",
            (int(Metric.PM25), late_ms),
        ).fetchone()
        assert late_n == (4,)
        assert conn.execute("SELECT count(*) FROM rejected_frames").fetchone() == (0,)


def test_bad_frames_are_rejected_with_reasons_while_good_ones_flow(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    kit_secret: tuple[MasterKey, bytes],
) -> None:
    master, secret = kit_secret
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=migrated_database_url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
    )
    now_ms = int(time.time() * 1000) - 60_000
    good = encode_readings(KIT, 7, 1, _frame_readings(now_ms, 5, pm25=8.0, noise_db=55.0), secret)
    forged = encode_readings(
        KIT, 7, 2, _frame_readings(now_ms, 5, pm25=8.0, noise_db=55.0), b"\x01" * 32
    )
    stranger = encode_readings(
        999, 1, 1, _frame_readings(now_ms, 5, pm25=8.0, noise_db=55.0), b"\x02" * 32
    )
    future = encode_readings(
        KIT, 7, 3, _frame_readings(now_ms + 86_400_000, 5, pm25=8.0, noise_db=55.0), secret
    )
    mixed_readings = _frame_readings(now_ms, 5, pm25=8.0, noise_db=55.0)
    mixed_readings["lat_deg"][2] = 0.0
    mixed_readings["lon_deg"][2] = 0.0
    mixed = encode_readings(KIT, 7, 4, mixed_readings, secret)
    truncated = good[:-5]
    published = [
        (f"{root}/kits/{KIT}/up", good),
        (f"{root}/kits/{KIT}/up", forged),
        (f"{root}/kits/999/up", stranger),
        (f"{root}/kits/{KIT + 1}/up", good),  # someone else's frame on another kit's topic
        (f"{root}/kits/{KIT}/up", future),
        (f"{root}/kits/{KIT}/up", mixed),
        (f"{root}/kits/{KIT}/up", truncated),
        (f"{root}/kits/{KIT}/up", b"\x00garbage"),
    ]
    with running(config, master):
        publisher = MqttPublisher(mqtt_url, topic_root=root)
        publisher.connect()
        for topic, payload in published:
            publisher.publish(topic, payload)
        publisher.close()
        wait_for(
            lambda: scalar(migrated_database_url, "SELECT count(*) FROM rejected_frames") == 7,
            what="seven rejects",
        )
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM rejected_frames"))
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (5 + 4,)
        payloads = {bytes(p) for (p,) in conn.execute("SELECT payload FROM rejected_frames")}
    assert reasons == sorted(
        [
            "bad_mac",
            "unknown_kit",
            "topic_mismatch",
            "far_future",
            "partial:null_island",
            "truncated",
            "bad_magic",
        ]
    )
    assert forged in payloads
    assert truncated in payloads
