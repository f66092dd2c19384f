"""Raw readings expire by themselves; their aggregates stay (stream.maintenance)."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial

import psycopg
import pytest

from bikesense.runtimes import EmbeddedConfig
from storage.kits import MasterKey
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.partials import Metric
from stream.maintenance import ADVISORY_LOCK_KEY, MaintenanceConfig, run_maintenance
from tests.api.api_factories import BUSY, RESOLUTIONS, WINDOWS, ride
from tests.runtime_harness import running, scalar, wait_for

pytestmark = [pytest.mark.postgres]

DAY_MS = 86_400_000


def _seed(url: str, *, now_ms: int) -> tuple[int, int]:
    """Two rides at BUSY: one 100 days ago, one yesterday. Returns their hour starts."""
    old_ms = (now_ms - 100 * DAY_MS) // 3_600_000 * 3_600_000
    recent_ms = (now_ms - DAY_MS) // 3_600_000 * 3_600_000
    agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
    with psycopg.connect(url, autocommit=True) as conn:
        write_batch(conn, ride(kit_id=1, ride_id=11, start=BUSY, n=60, t0_ms=old_ms), agg)
        write_batch(conn, ride(kit_id=1, ride_id=12, start=BUSY, n=60, t0_ms=recent_ms), agg)
        conn.execute(
            "INSERT INTO rejected_frames (received_at, reason, payload)"
            " VALUES (to_timestamp(%s / 1000.0), 'bad_mac', '\\x00')",
            (old_ms,),
        )
    return old_ms, recent_ms


def _partials(url: str, hour_ms: int) -> int:
    n = scalar(
        url,
        "SELECT coalesce(sum(n), 0) FROM window_partials WHERE resolution = 10"
        " AND window_s = 3600 AND metric = %s"
        " AND window_start = to_timestamp(%s / 1000.0)",
        (int(Metric.PM25), hour_ms),
    )
    return int(n)


def test_the_ingest_process_expires_raw_readings_by_itself(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    old_ms, recent_ms = _seed(url, now_ms=int(time.time() * 1000))
    assert scalar(url, "SELECT count(*) FROM readings") == 120
    pm25_old = _partials(url, old_ms)
    assert pm25_old == 60
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=f"{unique_topic_prefix}/bikesense/v1",
        maintenance=MaintenanceConfig(raw_retention=timedelta(days=90)),
    )
    with running(config, MasterKey.generate()):
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM readings") == 60,
            what="the old day's readings dropped",
        )
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM rejected_frames") == 0,
            what="the old reject deleted",
        )
    # Raw: only yesterday's ride is left, and no partition of the old day.
    assert scalar(url, "SELECT min(ts) >= to_timestamp(%s / 1000.0) FROM readings", (recent_ms,))
    assert (
        scalar(
            url,
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass AND c.relname = %s",
            (time.strftime("readings_d%Y%m%d", time.gmtime(old_ms / 1000)),),
        )
        == 0
    )
    # Aggregates of both days stay, and the day-long presence that counts rides for k.
    assert _partials(url, old_ms) == pm25_old
    assert _partials(url, recent_ms) == 60
    old_presence = (
        "SELECT count(*) FROM window_presence WHERE window_s = %s"
        " AND window_start <= to_timestamp(%s / 1000.0)"
    )
    assert scalar(url, old_presence, (86400, old_ms)) > 0
    assert scalar(url, old_presence, (3600, old_ms)) == 0  # near-tracks of the old day: gone


def test_one_process_at_a_time_does_the_work(migrated_database_url: str) -> None:
    url = migrated_database_url
    _seed(url, now_ms=int(time.time() * 1000))
    config = MaintenanceConfig()
    with (
        psycopg.connect(url, autocommit=True) as other,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        assert run_maintenance(conn, config).ran is False
        assert scalar(url, "SELECT count(*) FROM readings") == 120
        other.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        report = run_maintenance(conn, config)
    assert report.ran
    assert len(report.dropped) == 1
    assert report.rejects_deleted == 1
    assert report.presence_deleted > 0
    assert scalar(url, "SELECT count(*) FROM readings") == 60


def test_maintenance_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        MaintenanceConfig(raw_retention=timedelta(0))
