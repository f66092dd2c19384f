"""Plain-PostgreSQL partitions: created on demand, ahead, concurrently; retention drops them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from storage.retention import (
    drop_expired,
    ensure_partitions_ahead,
    expire_presence,
    raw_partitions,
)
from storage.writer import MS_PER_DAY, write_batch
from tests.storage.storage_factories import T0_MS, make_readings
from tests.storage.storage_reference import (
    ReferenceAggregate,
    presence_ride_counts,
    stored_ride_counts,
)

pytestmark = pytest.mark.postgres

DAY0 = T0_MS // MS_PER_DAY


def day_name(day: int) -> str:
    return "readings_d" + datetime.fromtimestamp(day * 86400, UTC).strftime("%Y%m%d")


@pytest.fixture
def conn(plain_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(plain_database_url, autocommit=True) as c:
        yield c


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def test_partitions_follow_the_data_and_retention_keeps_aggregates(
    conn: psycopg.Connection[Any],
) -> None:
    batches = [
        make_readings(30, kit_id=k, t0_ms=T0_MS - k * MS_PER_DAY, seed=k) for k in range(4)
    ]  # today and three days back, one kit per day
    for batch in batches:
        write_batch(conn, batch, ReferenceAggregate())
    assert raw_partitions(conn) == [day_name(DAY0 - k) for k in (3, 2, 1, 0)]
    partials_before = count(conn, "window_partials")
    presence_before = count(conn, "window_presence")

    # Keep the last two days: partitions ending at or before DAY0 - 1 go.
    cutoff = datetime.fromtimestamp((DAY0 - 1) * 86400, UTC)
    dropped = drop_expired(conn, cutoff)
    assert dropped == [day_name(DAY0 - 3), day_name(DAY0 - 2)]
    assert raw_partitions(conn) == [day_name(DAY0 - 1), day_name(DAY0)]
    assert count(conn, "readings") == 60
    assert count(conn, "window_partials") == partials_before
    assert count(conn, "window_presence") == presence_before
    assert drop_expired(conn, cutoff) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        drop_expired(conn, cutoff.replace(tzinfo=None))


def test_a_replay_after_retention_does_not_count_twice_in_live_partitions(
    conn: psycopg.Connection[Any],
) -> None:
    batch = make_readings(20)
    write_batch(conn, batch, ReferenceAggregate())
    before = conn.execute("SELECT sum(n) FROM window_partials").fetchone()
    assert write_batch(conn, batch, ReferenceAggregate()).inserted == 0
    assert conn.execute("SELECT sum(n) FROM window_partials").fetchone() == before


def test_partitions_ahead(conn: psycopg.Connection[Any]) -> None:
    assert ensure_partitions_ahead(conn, 2, now_ms=T0_MS) == 3
    assert ensure_partitions_ahead(conn, 2, now_ms=T0_MS) == 0
    assert raw_partitions(conn) == [day_name(DAY0 + k) for k in range(3)]


def test_concurrent_writers_meeting_a_new_day(plain_database_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write(kit: int) -> None:
        try:
            with psycopg.connect(plain_database_url, autocommit=True) as c:
                start.wait()
                for day in range(3):
                    batch = make_readings(20, kit_id=kit, t0_ms=T0_MS + day * MS_PER_DAY, seed=kit)
                    write_batch(c, batch, ReferenceAggregate(resolutions=(8,), windows_s=(3600,)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(plain_database_url) as c:
        assert count(c, "readings") == 4 * 3 * 20
        assert len(raw_partitions(c)) == 3
        row = c.execute("SELECT sum(n) FROM window_partials WHERE metric = 2").fetchone()
        assert row == (4 * 3 * 20,)


def test_a_running_export_does_not_block_a_new_partition(plain_database_url: str) -> None:
    with (
        psycopg.connect(plain_database_url, autocommit=True) as writer_conn,
        psycopg.connect(plain_database_url) as reader,
    ):
        write_batch(writer_conn, make_readings(10), ReferenceAggregate())
        # A long read holds ACCESS SHARE on readings until it commits.
        reader.execute("SELECT count(*) FROM readings").fetchone()
        writer_conn.execute("SET lock_timeout = '2s'")
        late = make_readings(10, kit_id=5, t0_ms=T0_MS - 40 * MS_PER_DAY)
        assert write_batch(writer_conn, late, ReferenceAggregate()).inserted == 10
        reader.rollback()


def test_readings_far_in_the_past_land(conn: psycopg.Connection[Any]) -> None:
    old = make_readings(5, t0_ms=T0_MS - 3650 * MS_PER_DAY)
    assert write_batch(conn, old, ReferenceAggregate()).inserted == 5
    ts = conn.execute("SELECT min(ts) FROM readings").fetchone()
    assert ts is not None
    assert ts[0] == datetime.fromtimestamp(int(old["ts_ms"][0]) / 1000, UTC)
    assert np.all(old["ts_ms"] < T0_MS - timedelta(days=3000).total_seconds() * 1000)


def test_expire_presence_keeps_day_windows(conn: psycopg.Connection[Any]) -> None:
    agg = ReferenceAggregate(resolutions=(10,), windows_s=(60, 86_400))
    write_batch(conn, make_readings(30, t0_ms=T0_MS - 5 * MS_PER_DAY), agg)
    write_batch(conn, make_readings(30, kit_id=2), agg)
    before = dict(
        conn.execute("SELECT window_s, count(*) FROM window_presence GROUP BY 1").fetchall()
    )
    gone = expire_presence(conn, datetime.fromtimestamp(T0_MS / 1000, UTC) - timedelta(days=2))
    after = dict(
        conn.execute("SELECT window_s, count(*) FROM window_presence GROUP BY 1").fetchall()
    )
    assert gone > 0
    assert after[86_400] == before[86_400]
    assert after[60] == before[60] - gone
    assert conn.execute(
        "SELECT min(window_start) FROM window_presence WHERE window_s = 60"
    ).fetchone() == (datetime.fromtimestamp(T0_MS / 1000, UTC),)
    # The ride counts of the expired windows are gone with them, the others stay.
    assert stored_ride_counts(conn) == presence_ride_counts(conn)


def test_retention_waits_for_an_export_without_blocking_writers(plain_database_url: str) -> None:
    with (
        psycopg.connect(plain_database_url, autocommit=True) as writer_conn,
        psycopg.connect(plain_database_url, autocommit=True) as retention_conn,
        psycopg.connect(plain_database_url) as reader,
    ):
        write_batch(
            writer_conn, make_readings(10, t0_ms=T0_MS - 10 * MS_PER_DAY), ReferenceAggregate()
        )
        reader.execute("SELECT count(*) FROM readings").fetchone()  # an export in progress
        dropped: list[str] = []
        retention = threading.Thread(
            target=lambda: dropped.extend(
                drop_expired(retention_conn, datetime.fromtimestamp(T0_MS / 1000, UTC))
            )
        )
        retention.start()
        pid = retention_conn.info.backend_pid
        deadline = time.monotonic() + 10
        while writer_conn.execute(  # the detach has begun and waits for the reader
            "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() != ("virtualxid",):
            assert time.monotonic() < deadline, "retention never waited for the export"
            time.sleep(0.02)
        # While retention waits for the reader, writers go on.
        writer_conn.execute("SET lock_timeout = '3s'")
        assert (
            write_batch(writer_conn, make_readings(10, kit_id=2), ReferenceAggregate()).inserted
            == 10
        )
        # The expired day is already out of sight of new queries; the new readings are in.
        assert writer_conn.execute("SELECT count(*) FROM readings").fetchone() == (10,)
        assert retention.is_alive()
        reader.commit()
        retention.join(10)
        assert not retention.is_alive()
        assert dropped == [day_name(DAY0 - 10)]
        assert raw_partitions(writer_conn) == [day_name(DAY0)]


def test_an_interrupted_detach_is_finished_next_time(conn: psycopg.Connection[Any]) -> None:
    write_batch(conn, make_readings(10, t0_ms=T0_MS - 10 * MS_PER_DAY), ReferenceAggregate())
    name = day_name(DAY0 - 10)
    with (
        psycopg.connect(conn.info.dsn) as reader,
        psycopg.connect(conn.info.dsn, autocommit=True) as detacher,
    ):
        reader.execute("SELECT count(*) FROM readings").fetchone()
        detacher.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            detacher.execute(
                sql.SQL("ALTER TABLE readings DETACH PARTITION {} CONCURRENTLY").format(
                    sql.Identifier(name)
                )
            )
    pending = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhdetachpending").fetchone()
    assert pending == (1,)
    assert drop_expired(conn, datetime.fromtimestamp(T0_MS / 1000, UTC)) == [name]
    assert raw_partitions(conn) == []
