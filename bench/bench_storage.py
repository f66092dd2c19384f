"""Storage cost: bytes per stored reading, raw and with aggregates, after a day and compressed.

One riding day of a fleet (``bench_write.fleet_readings``' readings, but each of ``--kits``
kits on its own route around Utrecht at 4.2 m/s, one reading a second for ``--hours``
hours, from 07:00 UTC: :func:`riding_apart`) goes through
the storage batch writer with the stream's aggregation at the default resolutions and
window sizes, on each backend:

* plain PostgreSQL, always (a throwaway cluster, or BIKESENSE_DATABASE_URL's server);
* TimescaleDB when the PostgreSQL the harness runs has the timescaledb extension: a
  throwaway cluster with it preloaded and telemetry off, as the tests start one
  (tests/conftest.py). Skipped, saying why, otherwise.

Sizes are each table's with its indexes and TOAST (partitions and chunks summed;
``hypertable_size`` on TimescaleDB) after ``VACUUM ANALYZE``; on TimescaleDB again after
compressing every chunk, which is what the 7-day compression policies do. Plain
PostgreSQL has nothing to compress a day's rows with, so it has one figure. "Raw" is
``readings``; "with aggregates" adds ``cell_windows``, ``window_rides``,
``window_presence`` and ``h3_cells``. Where a ``cell_windows`` row's bytes go comes from
``pg_column_size`` per column on plain PostgreSQL, with the share of the writer's
updates of ``cell_windows`` that were HOT (heap-only: the new row version on the same
page, no index entries), and the time and the PostgreSQL CPU (the writing session's,
bench_write.server_cpu_s) the writes took. ``--fillfactor`` writes ``cell_windows`` at
another fillfactor than the migrations set (to choose one by measurement). Prints
tables and writes bench/results/storage.json.

    .venv/bin/python bench/bench_storage.py [--kits 50] [--hours 6] [--batch 10000]
                                            [--fillfactor N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from h3.api import basic_int as h3int
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS
from bench_write import FINEST_RES, fleet_readings, server_cpu_s

from bikesense.defaults import H3_RESOLUTIONS as DEFAULT_H3_RESOLUTIONS
from bikesense.defaults import WINDOW_SIZES_S as DEFAULT_WINDOW_SIZES_S
from bikesense.exceptions import ServiceError
from bikesense.services import PostgresCluster, postgres_bindir
from storage.migrate import Backend, migrate
from storage.writer import write_batch
from stream.core.aggregate import aggregate

RAW_TABLES = ("readings",)
#: A mail bike's pace (bench_write's speed_mps) and how fast its heading wanders.
SPEED_MPS = 4.2
TURN_RAD_PER_S = 0.05
M_PER_DEG_LAT = 111_320.0
AGGREGATE_TABLES = ("cell_windows", "window_rides", "window_presence", "h3_cells")


def riding_apart(n: int, kits: int, seed: int = 11) -> np.ndarray:
    """bench_write's readings, but each kit on its own route: it rides at SPEED_MPS on a
    heading that wanders, from its own start in the same Utrecht box (bench_write's
    kits share one random walk and ride as a bunch, so they share every cell-window,
    which would understate the aggregates per reading)."""
    out = fleet_readings(n, kits=kits)
    rng = np.random.default_rng(seed)
    kit = np.arange(n) % kits
    steps = -(-n // kits)
    heading = rng.uniform(0, 2 * np.pi, (kits, 1)) + np.cumsum(
        rng.normal(0, TURN_RAD_PER_S, (kits, steps)), axis=1
    )
    north = np.cumsum(SPEED_MPS * np.cos(heading), axis=1) / M_PER_DEG_LAT
    east = np.cumsum(SPEED_MPS * np.sin(heading), axis=1) / (
        M_PER_DEG_LAT * np.cos(np.radians(52.1))
    )
    start = rng.uniform(0, 1, (kits, 2))
    step = np.arange(n) // kits
    out["lat_deg"] = 52.06 + (start[kit, 0] * 0.08 + north[kit, step]) % 0.08
    out["lon_deg"] = 5.06 + (start[kit, 1] * 0.12 + east[kit, step]) % 0.12
    out["cell"] = [
        h3int.latlng_to_cell(a, b, FINEST_RES)
        for a, b in zip(out["lat_deg"].tolist(), out["lon_deg"].tolist(), strict=True)
    ]
    return out


def timescale_missing() -> str | None:
    """Why no TimescaleDB cluster can start here, or None (tests/conftest.py's check)."""
    try:
        bindir = postgres_bindir()
    except ServiceError as exc:
        return str(exc)
    sharedir = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    control = Path(sharedir) / "extension" / "timescaledb.control"
    return None if control.exists() else f"no timescaledb extension in {bindir} ({control})"


@contextmanager
def cluster(backend: Backend) -> Iterator[str]:
    """The maintenance URL of a throwaway cluster for ``backend`` (or, for plain,
    BIKESENSE_DATABASE_URL's server)."""
    configured = os.environ.get("BIKESENSE_DATABASE_URL")
    if backend is Backend.PLAIN and configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="bikesense-bench-storage-"))
    root.chmod(0o755)
    pg = PostgresCluster(root / "postgres", durable=False)
    pg.start()  # the first start runs initdb
    if backend is Backend.TIMESCALE:
        pg.stop()
        # As the test harness: preloaded, telemetry never on, no background jobs (the
        # compression below is run by hand, so nothing else changes the sizes meanwhile).
        with (pg.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                "timescaledb.max_background_workers = 0\n"
            )
        pg.start()
    try:
        yield pg.url
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(base: str, backend: Backend, fillfactor: int | None = None) -> Iterator[str]:
    name = f"bench_storage_{backend.value}_{os.getpid()}"
    ident = sql.Identifier(name)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    url = f"{base.rpartition('/')[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, backend=backend)
        if fillfactor is not None:  # empty still: every page is written at it
            conn.execute(
                sql.SQL("ALTER TABLE cell_windows SET (fillfactor = {})").format(
                    sql.Literal(fillfactor)
                )
            )
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def hypertables(conn: psycopg.Connection[Any]) -> set[str]:
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is None:
        return set()
    rows = conn.execute("SELECT hypertable_name::text FROM timescaledb_information.hypertables")
    return {str(r[0]) for r in rows.fetchall()}


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Rows and bytes (heap, indexes, TOAST; every partition or chunk) per table."""
    conn.execute("VACUUM ANALYZE")
    hyper = hypertables(conn)
    out = {}
    for table in RAW_TABLES + AGGREGATE_TABLES:
        rel = sql.Identifier(table)
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(rel)).fetchone()
        size = conn.execute(
            "SELECT hypertable_size(%(t)s::regclass)"
            if table in hyper
            # pg_partition_tree lists nothing for a table that is not partitioned.
            else "SELECT coalesce((SELECT sum(pg_total_relation_size(relid))"
            " FROM pg_partition_tree(%(t)s::regclass)), pg_total_relation_size(%(t)s::regclass))",
            {"t": table},
        ).fetchone()
        assert rows is not None
        assert size is not None
        out[table] = {"rows": int(rows[0]), "bytes": int(size[0] or 0)}
    return out


def compress_all(conn: psycopg.Connection[Any]) -> int:
    """Compress every chunk of every hypertable with compression on; chunks compressed."""
    tables = conn.execute(
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables"
        " WHERE compression_enabled"
    ).fetchall()
    done = 0
    for (table,) in tables:
        rows = conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks(%s::regclass) c",
            (table,),
        ).fetchall()
        done += len(rows)
    return done


def cell_window_breakdown(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Average bytes per ``cell_windows`` row: each column's (``pg_column_size``), the
    whole tuple's, and the heap's and indexes' per row (the rest of the heap is the
    tuple header, line pointer and the free space ``fillfactor`` leaves)."""
    columns = [
        str(r[0])
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'cell_windows'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    ]
    averages = sql.SQL(", ").join(
        sql.SQL("avg(pg_column_size({}))").format(sql.Identifier(c)) for c in columns
    )
    row = conn.execute(
        sql.SQL("SELECT {}, avg(pg_column_size(t.*)), count(*) FROM cell_windows t").format(
            averages
        )
    ).fetchone()
    assert row is not None
    per_column = {c: float(v or 0) for c, v in zip(columns, row[:-2], strict=True)}
    n = int(row[-1])
    # A plain table on plain PostgreSQL (migration 0104.plain partitions none of it).
    heap, indexes = conn.execute(
        "SELECT pg_table_size('cell_windows'), pg_indexes_size('cell_windows')"
    ).fetchone() or (0, 0)
    groups: dict[str, float] = {}
    for column, size in per_column.items():
        group = (
            "histograms and their offsets"
            if column.endswith(("_hist", "_hist_offset"))
            else "key (resolution, window_s, window_start, cell)"
            if column in {"resolution", "window_s", "window_start", "cell"}
            else "counts, sums, min, max, noise energy"
        )
        groups[group] = groups.get(group, 0.0) + size
    return {
        "rows": n,
        "tuple_bytes": float(row[-2]),
        "heap_bytes_per_row": int(heap) / n,
        "index_bytes_per_row": int(indexes) / n,
        "columns": per_column,
        "groups": groups,
    }


#: Copies of ``cell_windows`` at other fillfactors: the room each leaves for the writer's
#: in-place merges, without the row versions those merges leave behind.
PROBES = (70, 85, 100)


def cell_window_probes(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """Bytes per row (heap, TOAST and indexes) of ``cell_windows``' rows copied into tables
    at the fillfactors of :data:`PROBES`."""
    out = {}
    for fillfactor in PROBES:
        probe = sql.Identifier(f"cell_windows_probe_{fillfactor}")
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE cell_windows INCLUDING ALL) WITH (fillfactor = {})"
            ).format(probe, sql.Literal(fillfactor))
        )
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM cell_windows").format(probe))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(probe))
        row = conn.execute(
            sql.SQL(
                "SELECT pg_total_relation_size({}::regclass)::float8 / count(*) FROM {}"
            ).format(sql.Literal(probe.as_string(conn)), probe)
        ).fetchone()
        assert row is not None
        out[f"fillfactor {fillfactor}"] = float(row[0])
        conn.execute(sql.SQL("DROP TABLE {}").format(probe))
    return out


def updates(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The writer's updates of ``cell_windows`` rows (its merges), and how many were HOT;
    every chunk's on TimescaleDB (the cumulative statistics, flushed first)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    relations = (
        "SELECT c::regclass FROM show_chunks('cell_windows') c"
        if "cell_windows" in hypertables(conn)
        else "SELECT 'cell_windows'::regclass"
    )
    row = conn.execute(
        "SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0)"
        f" FROM pg_stat_user_tables WHERE relid IN ({relations})"
    ).fetchone()
    assert row is not None
    return {"updates": int(row[0]), "hot_updates": int(row[1])}


def run(
    base: str, backend: Backend, readings: Any, batch: int, fillfactor: int | None
) -> dict[str, Any]:
    agg = functools.partial(
        aggregate,
        resolutions=DEFAULT_H3_RESOLUTIONS,
        window_sizes_s=DEFAULT_WINDOW_SIZES_S,
        day_tz="Europe/Amsterdam",
    )
    with (
        fresh_database(base, backend, fillfactor) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        cpu = server_cpu_s(conn)
        started = time.perf_counter()
        for i in range(0, len(readings), batch):
            write_batch(conn, readings[i : i + batch], agg)
        out: dict[str, Any] = {
            "write_s": time.perf_counter() - started,
            "server_cpu_s": server_cpu_s(conn) - cpu,
        }
        out["cell_windows_updates"] = updates(conn)
        out["day"] = table_sizes(conn)
        if backend is Backend.TIMESCALE:
            out["chunks_compressed"] = compress_all(conn)
            out["compressed"] = table_sizes(conn)
        else:
            out["cell_windows_row"] = cell_window_breakdown(conn)
            out["cell_windows_probes"] = cell_window_probes(conn)
        return out


def per_reading(sizes: dict[str, dict[str, int]], n: int) -> dict[str, float]:
    out = {table: s["bytes"] / n for table, s in sizes.items()}
    out["raw"] = sum(out[t] for t in RAW_TABLES)
    out["with aggregates"] = out["raw"] + sum(out[t] for t in AGGREGATE_TABLES)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kits", type=int, default=50)
    parser.add_argument(
        "--hours",
        type=float,
        default=6.0,
        help="hours each kit rides in the day, one reading a second",
    )
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--fillfactor",
        type=int,
        choices=range(10, 101),
        metavar="10..100",
        help="write cell_windows at this fillfactor instead of the migrations' one",
    )
    args = parser.parse_args()

    n = int(args.kits * args.hours * 3600)
    print(f"generating {n:,} readings ({args.kits} kits, {args.hours:g} h) ...", flush=True)
    readings = riding_apart(n, args.kits)
    results: dict[str, Any] = {}
    missing = timescale_missing()
    for backend in (Backend.PLAIN, Backend.TIMESCALE):
        if backend is Backend.TIMESCALE and missing is not None:
            print(f"TimescaleDB skipped: {missing}")
            results["timescale_skipped"] = missing
            continue
        print(f"{backend.value}: writing ...", flush=True)
        with cluster(backend) as base:
            results[backend.value] = run(base, backend, readings, args.batch, args.fillfactor)

    columns = [("plain", "day"), ("timescale", "day"), ("timescale", "compressed")]
    shown = [(b, s) for b, s in columns if b in results]
    figures = {f"{b} {s}": per_reading(results[b][s], n) for b, s in shown}
    print(f"\nbytes per stored reading, {n:,} readings of one day\n")
    print(f"{'table':<18}" + "".join(f"{name:>22}" for name in figures))
    for row in (*RAW_TABLES, *AGGREGATE_TABLES, "raw", "with aggregates"):
        print(f"{row:<18}" + "".join(f"{f[row]:>22,.1f}" for f in figures.values()))
    breakdown = results["plain"]["cell_windows_row"]
    print(
        f"\ncell_windows, plain: {breakdown['rows']:,} rows, heap "
        f"{breakdown['heap_bytes_per_row']:,.0f} B/row + indexes "
        f"{breakdown['index_bytes_per_row']:,.0f}; tuple data {breakdown['tuple_bytes']:,.0f}"
    )
    for group, size in breakdown["groups"].items():
        print(f"  {group:<48} {size:>8,.0f} B")
    for name in ("plain", "timescale"):
        if name in results:
            upd = results[name]["cell_windows_updates"]
            hot = upd["hot_updates"] / max(upd["updates"], 1)
            print(
                f"{name}: written in {results[name]['write_s']:.0f} s "
                f"({results[name]['server_cpu_s'] / n * 1e6:.1f} µs of PostgreSQL CPU per "
                f"reading); cell_windows rows merged into {upd['updates']:,} times, "
                f"{hot:.0%} of them HOT"
            )
    print("cell_windows' rows copied into tables at other fillfactors, B/row:")
    for name, size in results["plain"]["cell_windows_probes"].items():
        print(f"  {name:<48} {size:>8,.0f} B")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_at_end": os.getloadavg(),
        "readings": n,
        "kits": args.kits,
        "hours": args.hours,
        "batch": args.batch,
        "fillfactor": args.fillfactor,
        "bytes_per_reading": figures,
        "results": results,
    }
    (RESULTS / "storage.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'storage.json'}")


if __name__ == "__main__":
    main()
