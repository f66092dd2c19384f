"""Write throughput of the storage batch writer, against the machine's ceiling and the naive way.

In one run, on one PostgreSQL, with the same enriched readings:

* bare binary COPY of the rows into ``readings`` itself (same partitions, unique
  key and index): the ceiling for storing raw readings, with nothing else done;
* bare binary COPY into an unlogged-free, index-free copy of the table: the
  machine's raw COPY speed;
* the batch writer (``storage.writer.write_batch``), batches of ``--batch``
  readings, with the stream's own aggregation at the default resolutions and
  window sizes, and with an aggregation that returns nothing (storage alone);
* the same batches written a second time (every reading a duplicate);
* one INSERT per reading in autocommit, on a subset (it is too slow for all).

For the two batch-writer runs it also reports the CPU time of the writer's PostgreSQL
session (from /proc, for a server on this machine): on a shared machine the time a run
takes varies with the other work, the CPU it spends hardly. Each contender gets a
freshly migrated database. Starts a throwaway cluster
unless BIKESENSE_DATABASE_URL is set. Prints a table and writes
bench/results/write.json.

    .venv/bin/python bench/bench_write.py [--readings 300000] [--batch 10000] [--repeat 2]
                                          [--fillfactor N]

``--fillfactor`` writes ``cell_windows`` at another fillfactor than the migrations set.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from h3.api import basic_int as h3int
from psycopg import sql

from bikesense.defaults import H3_RESOLUTIONS as DEFAULT_H3_RESOLUTIONS
from bikesense.defaults import WINDOW_SIZES_S as DEFAULT_WINDOW_SIZES_S
from bikesense.services import PostgresCluster
from storage import copybin
from storage.migrate import Backend, migrate
from storage.readings import READING_COLUMNS
from storage.writer import AggregateFn, write_batch
from stream.core.aggregate import aggregate
from stream.core.batch import ENRICHED_DTYPE
from stream.core.partials import PARTIAL_DTYPE, PRESENCE_DTYPE

RESULTS = Path(__file__).resolve().parent / "results"
T0_MS = int(datetime(2026, 10, 1, 7, tzinfo=UTC).timestamp() * 1000)
FINEST_RES = 12


def fleet_readings(n: int, kits: int = 50, seed: int = 7) -> np.ndarray:
    """``n`` one-second readings of ``kits`` kits riding random walks around Utrecht."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    i = np.arange(n)
    kit, step = i % kits, i // kits
    out["kit_id"], out["boot_id"] = kit + 1, 1
    out["seq"], out["idx"] = step // 10, step % 10
    out["ts_ms"] = T0_MS + step * 1000
    walk = np.cumsum(rng.normal(0, 2e-5, (2, n)), axis=1)
    out["lat_deg"] = 52.06 + (walk[0] % 0.08)
    out["lon_deg"] = 5.06 + (walk[1] % 0.12)
    out["gnss_fix"], out["hdop"], out["satellites"], out["speed_mps"] = 2, 0.9, 9, 4.2
    out["pm1_ugm3"] = rng.gamma(2.0, 3.0, n)
    out["pm25_ugm3"] = rng.gamma(2.0, 5.0, n)
    out["pm10_ugm3"] = rng.gamma(2.0, 8.0, n)
    out["no2_ugm3"] = rng.gamma(3.0, 9.0, n)
    out["noise_laeq_db"] = rng.normal(66.0, 7.0, n)
    out["noise_lamax_db"] = out["noise_laeq_db"] + rng.uniform(2, 12, n)
    out["interval_ms"] = 1000
    out["temperature_c"], out["humidity_pct"] = 11.0, 78.0
    out["cell"] = [
        h3int.latlng_to_cell(a, b, FINEST_RES)
        for a, b in zip(out["lat_deg"].tolist(), out["lon_deg"].tolist(), strict=True)
    ]
    out["ride_id"] = out["kit_id"] * 1000 + 1
    out["received_ms"] = out["ts_ms"] + 2000
    return out


@contextmanager
def server() -> Iterator[str]:
    """The maintenance URL of BIKESENSE_DATABASE_URL's server, or of a throwaway cluster."""
    configured = os.environ.get("BIKESENSE_DATABASE_URL")
    if configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="bikesense-bench-write-"))
    root.chmod(0o755)
    cluster = PostgresCluster(root / "postgres", durable=False)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(base: str, label: str, fillfactor: int | None = None) -> Iterator[str]:
    """A freshly migrated database; ``cell_windows`` at ``fillfactor`` if given."""
    name = f"bench_write_{label}_{os.getpid()}"
    ident = sql.Identifier(name)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    url = f"{base.rpartition('/')[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, backend=Backend.PLAIN)
        conn.execute(
            "SELECT bikesense_ensure_readings_partitions(%s::integer[])", ([T0_MS // 86_400_000],)
        )
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


def batches(readings: np.ndarray, size: int) -> list[np.ndarray]:
    return [readings[i : i + size] for i in range(0, len(readings), size)]


def bare_copy(url: str, readings: np.ndarray, batch: int, *, table: str) -> float:
    """Seconds to COPY every batch (binary, one transaction each) into ``table``."""
    columns = READING_COLUMNS[1:]
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), names
    )
    with psycopg.connect(url, autocommit=True) as conn:
        if table != "readings":
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE readings)").format(sql.Identifier(table)))
        started = time.perf_counter()
        for part in batches(readings, batch):
            values = {name: part[name] for name in ENRICHED_DTYPE.names or ()}
            values["ts"] = copybin.ms_to_pg_timestamp(part["ts_ms"])
            values["received_at"] = copybin.ms_to_pg_timestamp(part["received_ms"])
            payload = copybin.encode(columns, values, len(part))
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                copy.write(payload)
        return time.perf_counter() - started


def nothing(_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)


class TimedAggregate:
    """Wraps the aggregation to tell its CPU time apart from the database's."""

    def __init__(self, fn: AggregateFn) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.partials = 0

    def __call__(self, enriched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        out = self.fn(enriched)
        self.seconds += time.perf_counter() - started
        self.partials += len(out[0])
        return out


def server_cpu_s(conn: psycopg.Connection[Any]) -> float:
    """CPU seconds (user and system) the server process of ``conn`` has used so far, from
    /proc: a figure the other work on a shared machine hardly changes, unlike the time
    it took. NaN for a server on another machine."""
    if conn.info.host not in {"127.0.0.1", "::1", "localhost"} and not conn.info.host.startswith(
        "/"
    ):
        return float("nan")
    try:
        stat = Path(f"/proc/{conn.info.backend_pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # from the state on (proc(5): utime, stime)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer(
    url: str,
    readings: np.ndarray,
    batch: int,
    agg: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[float, float, int, float]:
    """(seconds first time, seconds replaying everything, readings inserted, the server's
    CPU seconds for the first time)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cpu = server_cpu_s(conn)
        started = time.perf_counter()
        inserted = sum(write_batch(conn, part, agg).inserted for part in batches(readings, batch))
        first = time.perf_counter() - started
        cpu = server_cpu_s(conn) - cpu
        started = time.perf_counter()
        again = sum(write_batch(conn, part, agg).inserted for part in batches(readings, batch))
        replay = time.perf_counter() - started
    assert inserted == len(readings)
    assert again == 0
    return first, replay, inserted, cpu


def insert_per_row(url: str, readings: np.ndarray) -> float:
    """Seconds for one INSERT per reading, autocommit: the naive way."""
    names = [c.name for c in READING_COLUMNS[1:]]
    statement = sql.SQL("INSERT INTO readings ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )
    rows: list[list[Any]] = []
    for r in readings:
        row = [r[n].item() for n in ENRICHED_DTYPE.names or () if n not in {"ts_ms", "received_ms"}]
        rows.append(row)
    ts = [datetime.fromtimestamp(int(t) / 1000, UTC) for t in readings["ts_ms"]]
    received = [datetime.fromtimestamp(int(t) / 1000, UTC) for t in readings["received_ms"]]
    order = [n for n in ENRICHED_DTYPE.names or () if n not in {"ts_ms", "received_ms"}]
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for row, t, rcv in zip(rows, ts, received, strict=True):
            values = dict(zip(order, row, strict=True)) | {"ts": t, "received_at": rcv}
            conn.execute(statement, [values[n] for n in names])
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--naive", type=int, default=5_000, help="readings for the one-INSERT-per-reading run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per contender, each on a fresh database; the best is kept",
    )
    parser.add_argument(
        "--fillfactor",
        type=int,
        choices=range(10, 101),
        metavar="10..100",
        help="write cell_windows at this fillfactor instead of the migrations' one",
    )
    args = parser.parse_args()

    print(f"generating {args.readings:,} readings ...", flush=True)
    readings = fleet_readings(args.readings)
    n = len(readings)
    results: dict[str, dict[str, float]] = {}

    def record(name: str, seconds: float, rows: int, **extra: float) -> None:
        # Best of the repeats: the machine is shared, the fastest run is the least disturbed.
        runs = results.setdefault(name, {"rows": rows, "seconds": float("inf"), "runs": 0})
        runs["runs"] += 1
        if seconds < runs["seconds"]:
            runs.update(seconds=seconds, **extra)

    with server() as base:
        # Warm-up, not reported: a new cluster first has to create its WAL segment
        # files, which would penalise whichever contender ran first.
        with fresh_database(base, "warmup", args.fillfactor) as url:
            bare_copy(url, readings, args.batch, table="readings")
        for _ in range(args.repeat):
            with fresh_database(base, "copy", args.fillfactor) as url:
                record(
                    "bare COPY into readings (same key and index)",
                    bare_copy(url, readings, args.batch, table="readings"),
                    n,
                )
            with fresh_database(base, "copyraw", args.fillfactor) as url:
                record(
                    "bare COPY into an index-free table",
                    bare_copy(url, readings, args.batch, table="plain_copy"),
                    n,
                )
            with fresh_database(base, "writer", args.fillfactor) as url:
                agg_full = TimedAggregate(
                    functools.partial(
                        aggregate,
                        resolutions=DEFAULT_H3_RESOLUTIONS,
                        window_sizes_s=DEFAULT_WINDOW_SIZES_S,
                        day_tz="Europe/Amsterdam",
                    )
                )
                first, replay, _, cpu = writer(url, readings, args.batch, agg_full)
                record(
                    "batch writer + stream aggregation (4 res x 4 windows)",
                    first,
                    n,
                    aggregation_s=agg_full.seconds,
                    partials=agg_full.partials,
                    server_cpu_s=cpu,
                )
                record("batch writer, replaying every batch (all duplicates)", replay, n)
            with fresh_database(base, "writer0", args.fillfactor) as url:
                first, _, _, cpu = writer(url, readings, args.batch, nothing)
                record("batch writer, no aggregation (storage alone)", first, n, server_cpu_s=cpu)
        with fresh_database(base, "naive", args.fillfactor) as url:
            subset = readings[: args.naive]
            record("one INSERT per reading, autocommit", insert_per_row(url, subset), len(subset))

    ceiling = results["bare COPY into readings (same key and index)"]
    ceiling_rate = ceiling["rows"] / ceiling["seconds"]
    print(
        f"\n{n:,} readings in batches of {args.batch:,}, best of {args.repeat} runs "
        f"(one INSERT per reading: first {args.naive:,}, once)\n"
    )
    print(f"{'contender':<58} {'readings/s':>12} {'vs COPY':>8}")
    for name, r in results.items():
        rate = r["rows"] / r["seconds"]
        r["readings_per_s"] = rate
        r["ratio_to_bare_copy"] = rate / ceiling_rate
        print(f"{name:<58} {rate:>12,.0f} {rate / ceiling_rate:>7.2f}x")
    full = results["batch writer + stream aggregation (4 res x 4 windows)"]
    db_only = full["rows"] / (full["seconds"] - full["aggregation_s"])
    print(
        f"\naggregation CPU inside the writer run: {full['aggregation_s']:.1f} s "
        f"({full['partials']:,.0f} partial rows); the writer's database work alone: "
        f"{db_only:,.0f} readings/s"
    )
    alone = results["batch writer, no aggregation (storage alone)"]
    print(
        f"PostgreSQL CPU per reading in the writer's session: "
        f"{full['server_cpu_s'] / full['rows'] * 1e6:.1f} µs with the aggregates, "
        f"{alone['server_cpu_s'] / alone['rows'] * 1e6:.1f} µs without"
    )
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
        "batch": args.batch,
        "naive_readings": args.naive,
        "repeat": args.repeat,
        "fillfactor": args.fillfactor,
        "results": results,
    }
    (RESULTS / "write.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'write.json'}")


if __name__ == "__main__":
    main()
