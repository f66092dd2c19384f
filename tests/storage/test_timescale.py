"""The TimescaleDB path: runs against BIKESENSE_TEST_TIMESCALE_URL, or a TimescaleDB cluster
the harness starts when the extension is installed here; skips saying which is missing
otherwise (tests/conftest.py, docs/design.md decision 5).

The same migrations and the same writer as on plain PostgreSQL; here readings
are a hypertable with compression and retention policies.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storage import copybin
from storage.calibration_run import run_fit
from storage.cell_stats import cell_stats
from storage.corrected_apply import apply_range
from storage.exports import Encoding, ExportFilter, aiter_export_blocks, decode_binary_rows
from storage.migrate import migrate
from storage.retention import drop_expired, raw_partitions, set_raw_retention
from storage.selection import BBox, Selection
from storage.writer import MS_PER_DAY, write_batch
from stream.core.aggregate import aggregate
from stream.core.calibration_fit import FitConfig
from stream.core.partials import Metric
from stream.maintenance import MaintenanceConfig, run_maintenance
from tests.api.api_factories import RESOLUTIONS, WINDOWS
from tests.storage.calibration_data import DAY0, DAYS, write_all
from tests.storage.storage_factories import T0_MS, make_readings

pytestmark = [pytest.mark.timescale, pytest.mark.postgres]

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(60, 3600), day_tz="UTC"
)
T0 = datetime.fromtimestamp(T0_MS / 1000, UTC)


@pytest.fixture
def ts_conn(timescale_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    # Its policies are unscheduled (tests/conftest.py): tests that mean to run them
    # call run_job.
    with psycopg.connect(timescale_database_url, autocommit=True) as conn:
        yield conn


def partial_sum(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    return conn.execute("SELECT sum(n), sum(sum), count(*) FROM window_partials").fetchone()


#: Every table that grows with time, and what compression segments it by.
HYPERTABLES = {
    "readings": ["kit_id"],
    "cell_windows": ["resolution", "window_s"],
    "window_rides": ["resolution", "window_s"],
    "window_presence": ["resolution", "window_s"],
    "rejected_frames": None,
    "cell_windows_corrected": ["resolution", "window_s"],
}


def test_hypertable_and_policies(ts_conn: psycopg.Connection[Any]) -> None:
    assert migrate(ts_conn).applied == ()
    rows = ts_conn.execute(
        "SELECT hypertable_name::text, compression_enabled FROM timescaledb_information.hypertables"
    ).fetchall()
    assert dict(rows) == {name: seg is not None for name, seg in HYPERTABLES.items()}
    for name, segment in HYPERTABLES.items():
        got = ts_conn.execute(
            "SELECT array_agg(attname::text ORDER BY segmentby_column_index)"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = %s AND segmentby_column_index IS NOT NULL",
            (name,),
        ).fetchone()
        assert got == (segment,), name
    policies = set(
        ts_conn.execute(
            "SELECT hypertable_name::text, proc_name::text FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL"
        ).fetchall()
    )
    assert policies == {
        ("readings", "policy_compression"),
        ("readings", "policy_retention"),
        ("cell_windows", "policy_compression"),
        ("window_rides", "policy_compression"),
        ("window_presence", "policy_compression"),
        ("rejected_frames", "policy_retention"),
        ("cell_windows_corrected", "policy_compression"),
    }
    # The corrected aggregates are segmented and ordered as the raw ones they are read
    # joined to (storage/corrected_windows.py).
    orders = ts_conn.execute(
        "SELECT hypertable_name::text, array_agg(attname::text ORDER BY orderby_column_index)"
        " FROM timescaledb_information.compression_settings"
        " WHERE hypertable_name IN ('cell_windows', 'cell_windows_corrected')"
        " AND orderby_column_index IS NOT NULL GROUP BY 1"
    ).fetchall()
    assert dict(orders) == {
        "cell_windows": ["cell", "window_start"],
        "cell_windows_corrected": ["cell", "window_start"],
    }
    jobs = {
        r[0]
        for r in ts_conn.execute(
            "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name = 'readings'"
        ).fetchall()
    }
    assert {"policy_compression", "policy_retention"} <= jobs
    set_raw_retention(ts_conn, timedelta(days=30))
    config = ts_conn.execute(
        "SELECT config ->> 'drop_after' FROM timescaledb_information.jobs"
        " WHERE hypertable_name = 'readings' AND proc_name = 'policy_retention'"
    ).fetchone()
    assert config == ("30 days",)


def exported_times_ms(url: str, start: datetime, end: datetime) -> np.ndarray:
    """The event times of the readings a raw export of ``start .. end`` holds, in order."""

    async def run() -> list[bytes]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
            return [
                block.data
                async for block in aiter_export_blocks(
                    [aconn], ["ts"], ExportFilter(start, end), Encoding.BINARY, day_tz="UTC"
                )
            ]

    rows = [decode_binary_rows(["ts"], data, pseudonymous=False) for data in asyncio.run(run())]
    return copybin.pg_timestamp_to_ms(np.concatenate(rows)["ts"])


def test_writer_exactly_once_across_compression(
    ts_conn: psycopg.Connection[Any], timescale_url: str
) -> None:
    old = make_readings(200, kit_id=1, t0_ms=T0_MS - 10 * MS_PER_DAY, seed=1)
    new = make_readings(200, kit_id=2, seed=2)
    assert write_batch(ts_conn, old, AGGREGATE).inserted == 200
    assert write_batch(ts_conn, new, AGGREGATE).inserted == 200
    assert len(raw_partitions(ts_conn)) == 2
    before = partial_sum(ts_conn)

    ts_conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') AS c")
    compressed = ts_conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'readings' AND is_compressed"
    ).fetchone()
    assert compressed == (2,)
    # Redelivery into compressed chunks: nothing changes.
    assert write_batch(ts_conn, old, AGGREGATE).inserted == 0
    assert write_batch(ts_conn, np.concatenate([old[50:], new[:10]]), AGGREGATE).inserted == 0
    assert partial_sum(ts_conn) == before
    # Late data into a compressed chunk lands, in its own windows.
    late = make_readings(50, kit_id=3, t0_ms=T0_MS - 10 * MS_PER_DAY + 3_600_000, seed=3)
    assert write_batch(ts_conn, late, AGGREGATE).inserted == 50
    got = exported_times_ms(
        make_conninfo(timescale_url, dbname=ts_conn.info.dbname),
        T0 - timedelta(days=11),
        T0 + timedelta(days=1),
    )
    assert len(got) == 450
    assert (np.diff(got) >= 0).all()

    stats = cell_stats(
        ts_conn,
        Selection(Metric.PM25, 10, 60, T0, T0 + timedelta(hours=1)),
        BBox(5.0, 52.0, 5.3, 52.2),
    )
    assert stats["n"].sum() == 200


def test_retention_drops_chunks_and_keeps_aggregates(ts_conn: psycopg.Connection[Any]) -> None:
    write_batch(ts_conn, make_readings(30, kit_id=1, t0_ms=T0_MS - 5 * MS_PER_DAY), AGGREGATE)
    write_batch(ts_conn, make_readings(30, kit_id=2), AGGREGATE)
    before = partial_sum(ts_conn)
    dropped = drop_expired(ts_conn, T0 - timedelta(days=2))
    assert len(dropped) == 1
    assert ts_conn.execute("SELECT count(*) FROM readings").fetchone() == (30,)
    assert partial_sum(ts_conn) == before


def test_policies_run(ts_conn: psycopg.Connection[Any]) -> None:
    # Background workers of 2.28 on PostgreSQL 15.20 report "cannot drop portal"
    # (docs/design.md decision 5): run the jobs in the foreground instead.
    # The policies count age from the server's now(), so the days are placed from it:
    # 200 days old (past the 90 days of retention), 20 (past the 7 of compression), today.
    row = ts_conn.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint").fetchone()
    assert row is not None
    now_ms = int(row[0])
    for kit, days in ((1, 200), (2, 20), (3, 0)):
        write_batch(
            ts_conn, make_readings(30, kit_id=kit, t0_ms=now_ms - days * MS_PER_DAY), AGGREGATE
        )
    jobs = dict(
        ts_conn.execute(
            "SELECT proc_name, job_id FROM timescaledb_information.jobs"
            " WHERE hypertable_name = 'readings'"
        ).fetchall()
    )
    ts_conn.execute(sql.SQL("CALL run_job({})").format(sql.Literal(jobs["policy_retention"])))
    ts_conn.execute(sql.SQL("CALL run_job({})").format(sql.Literal(jobs["policy_compression"])))
    assert ts_conn.execute("SELECT count(*) FROM readings").fetchone() == (60,)
    compressed = ts_conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'readings' AND is_compressed"
    ).fetchone()
    assert compressed == (1,)


def aggregate_tables(conn: psycopg.Connection[Any]) -> list[Any]:
    """The aggregate tables' rows; sums rounded (two batches add in another order)."""
    return [
        conn.execute(query).fetchall()
        for query in (
            "SELECT resolution, window_s, window_start, cell, pm25_n, pm25_min, pm25_max,"
            " pm25_hist, round(pm25_sum::numeric, 6), noise_n, round(noise_energy::numeric, 3)"
            " FROM cell_windows ORDER BY 1, 2, 3, 4",
            "SELECT * FROM window_rides ORDER BY 1, 2, 3, 4",
            "SELECT * FROM window_presence ORDER BY 1, 2, 3, 4, 5, 6",
        )
    ]


def test_late_data_merges_into_compressed_aggregates(ts_conn: psycopg.Connection[Any]) -> None:
    """The aggregates' chunks compressed: a late upload still merges into its windows, and
    the tables end as if nothing had been compressed."""
    early = make_readings(200, kit_id=1, ride_id=1, t0_ms=T0_MS - 30 * MS_PER_DAY, seed=1)
    late = make_readings(100, kit_id=2, ride_id=2, t0_ms=T0_MS - 30 * MS_PER_DAY + 30_000, seed=2)
    write_batch(ts_conn, early, AGGREGATE)
    for table in ("cell_windows", "window_rides", "window_presence"):
        ts_conn.execute("SELECT compress_chunk(c) FROM show_chunks(%s::regclass) AS c", (table,))
    compressed = ts_conn.execute(
        "SELECT count(DISTINCT hypertable_name) FROM timescaledb_information.chunks"
        " WHERE is_compressed AND hypertable_name <> 'readings'"
    ).fetchone()
    assert compressed == (3,)
    assert write_batch(ts_conn, late, AGGREGATE).inserted == 100
    assert write_batch(ts_conn, late, AGGREGATE).inserted == 0  # a redelivery: nothing
    got = aggregate_tables(ts_conn)
    # The same readings in one batch, nothing compressed: the same rows.
    ts_conn.execute("TRUNCATE readings, cell_windows, window_rides, window_presence")
    write_batch(ts_conn, np.concatenate([early, late]), AGGREGATE)
    assert aggregate_tables(ts_conn) == got


def test_the_round_expires_compressed_presence(ts_conn: psycopg.Connection[Any]) -> None:
    """Short-window presence and ride counts past the horizon go from compressed chunks
    too; day windows and every aggregate stay."""
    row = ts_conn.execute("SELECT now()").fetchone()
    assert row is not None
    now: datetime = row[0]
    old_ms = int(now.timestamp() * 1000) - 100 * MS_PER_DAY
    write_batch(
        ts_conn,
        make_readings(120, kit_id=1, ride_id=1, t0_ms=old_ms, seed=1),
        functools.partial(aggregate, resolutions=(8, 10), window_sizes_s=(60, 86400), day_tz="UTC"),
    )
    before = partial_sum(ts_conn)
    for table in ("cell_windows", "window_rides", "window_presence"):
        ts_conn.execute("SELECT compress_chunk(c) FROM show_chunks(%s::regclass) AS c", (table,))
    report = run_maintenance(ts_conn, MaintenanceConfig(raw_retention=timedelta(days=90)), now=now)
    assert report.presence_deleted > 0
    assert len(report.dropped) == 1
    for table in ("window_presence", "window_rides"):
        left = ts_conn.execute(
            sql.SQL("SELECT array_agg(DISTINCT window_s) FROM {}").format(sql.Identifier(table))
        ).fetchone()
        assert left == ([86400],), table
    assert ts_conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    after = partial_sum(ts_conn)
    assert before is not None
    assert after is not None
    # The same partials; their sum is added in another order once compressed.
    assert (after[0], after[2]) == (before[0], before[2])
    assert float(after[1]) == pytest.approx(float(before[1]), rel=1e-12)


def corrected_rows(conn: psycopg.Connection[Any]) -> list[Any]:
    """cell_windows_corrected, every histogram as its 32 bins; sums rounded."""
    return conn.execute(
        "SELECT resolution, window_s, window_start, cell, pm25_n, pm25_min, pm25_max,"
        " bikesense_hist_dense(pm25_hist_offset, pm25_hist), round(pm25_sum::numeric, 6),"
        " round(pm25_u_sum::numeric, 9) FROM cell_windows_corrected ORDER BY 1, 2, 3, 4"
    ).fetchall()


def test_corrected_days_are_made_again_into_compressed_chunks(
    ts_conn: psycopg.Connection[Any], timescale_database_url: str
) -> None:
    """Re-correcting days whose raw readings and corrected aggregates are compressed (a
    re-fit within the raw retention, after the 7 days of the compression policy) replaces
    their rows as on uncompressed chunks, and the corrected reads see the same figures."""
    write_all(timescale_database_url)
    run_fit(
        ts_conn,
        DAY0,
        DAYS[-1] + timedelta(days=1),
        resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        step_days=1,
        fit=FitConfig(window_days=1),
        metrics=("pm25_ugm3",),
    )
    first = corrected_rows(ts_conn)
    assert first
    start = datetime(DAY0.year, DAY0.month, DAY0.day, 10, tzinfo=UTC)
    sel = Selection(Metric.PM25, 10, 3600, start, start + timedelta(hours=1), corrected=True)
    shown = cell_stats(ts_conn, sel, BBox(-180, -85, 180, 85))
    assert len(shown) > 0
    for table in ("readings", "cell_windows", "cell_windows_corrected"):
        ts_conn.execute("SELECT compress_chunk(c) FROM show_chunks(%s::regclass) AS c", (table,))
    compressed = ts_conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'cell_windows_corrected' AND NOT is_compressed"
    ).fetchone()
    assert compressed == (0,)
    report = apply_range(
        ts_conn,
        DAY0,
        DAYS[-1] + timedelta(days=1),
        resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        force=True,
    )
    assert report.recomputed == list(DAYS)
    assert corrected_rows(ts_conn) == first
    again = cell_stats(ts_conn, sel, BBox(-180, -85, 180, 85))
    for name in shown.dtype.names or ():
        np.testing.assert_array_equal(again[name], shown[name], err_msg=name)
