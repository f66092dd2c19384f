"""Reads right after a backlog lands: does the database plan them well without anyone
running ANALYZE by hand?

Fills a throwaway PostgreSQL (autovacuum on, its defaults) through the storage writer
and the stream core's aggregate with ``--readings`` readings of a postal fleet riding
street rounds (``bench_tiles``' synthetic town: readings every 10 s, 30 bikes, as many
days as it takes, the last day the last whose rounds are over), as fast as the writer
goes: the "bulk upload" of a fleet coming back online. Then, at once and without any
manual ANALYZE, it asks an API server in its own process, as an officer:

* ``cells_hour``: ``/v1/cells`` at resolution 10 for one busy hour of the last day;
* ``timeseries_day``: ``/v1/timeseries`` of one of that hour's cells, hourly buckets
  over its day;
* ``tiles_hour``: the zoom-14 tiles of the town for that hour;
* ``cells_400_days`` and ``timeseries_400_days``: the same at resolution 10 and daily
  buckets over 400 days (answered from the daily windows).

Each is asked ``--repeat`` times; p50 and p95 per request kind, and a request that takes
longer than ``--timeout`` s counts as a timeout. With ``--statistics keeper`` (the
default) the statistics keeper the ingest runtime runs (``storage.statistics``) runs
beside the load, on its own connection and at its own interval, as it would in
``bikesense ingest``; ``--statistics none`` leaves the tables to autovacuum alone (the
state the issue measured), for the side-by-side figure. ``--baseline REV`` serves the
same reads with the code of a git revision too, from a second API server on the same
database, the two taking turns request by request: before and after in one run, on the
same backlog and under the same load. Each server's CPU per request (from /proc) is
reported beside the percentiles.

    .venv/bin/python bench/bench_reads.py [--readings 1000000] [--statistics keeper|none]
        [--baseline REV]

Writes bench/results/reads-<statistics>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3i
import httpx
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, api_server, checkout, cpu_s, database
from bench_tiles import LAT0, LON0, ROUNDS_OVER_H, day_of_readings, rounds, town_tiles

from api.keys import create_key
from api.roles import Role
from bikesense.defaults import H3_RESOLUTIONS as DEFAULT_H3_RESOLUTIONS
from bikesense.defaults import WINDOW_SIZES_S as DEFAULT_WINDOW_SIZES_S
from storage.rollups import refresh_rollups
from storage.statistics import StatisticsKeeper
from storage.writer import write_batch
from stream.core.aggregate import aggregate

BIKES = 30
#: The synthetic town, as bench_tiles' tiles cover it (west,south,east,north).
TOWN_BBOX = f"{LON0 - 0.04},{LAT0 - 0.024},{LON0 + 0.04},{LAT0 + 0.024}"
BATCH = 20_000  # readings per write: what one busy ingest batch holds, about


def fill(url: str, readings: int, end: datetime, keeper: StatisticsKeeper | None) -> dict[str, Any]:
    """Write ``readings`` readings through the writer, the keeper (if any) beside it."""
    tracks = rounds(BIKES)
    per_day = len(day_of_readings(end, tracks, 0, np.random.default_rng(0)))
    days = -(-readings // per_day)
    rng = np.random.default_rng(7)
    agg = partial(
        aggregate, resolutions=DEFAULT_H3_RESOLUTIONS, window_sizes_s=DEFAULT_WINDOW_SIZES_S
    )
    today = end.replace(hour=0, minute=0, second=0, microsecond=0)
    last_day = today if end >= today + timedelta(hours=ROUNDS_OVER_H) else today - timedelta(1)
    first_day = last_day - timedelta(days=days - 1)
    stop = threading.Event()
    analyzed: list[str] = []

    def keep() -> None:
        assert keeper is not None
        while not stop.wait(keeper.interval_s):
            with psycopg.connect(url, autocommit=True) as conn:
                analyzed.extend(keeper.run(conn))

    thread = threading.Thread(target=keep, daemon=True) if keeper is not None else None
    if thread is not None:
        thread.start()
    written = 0
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for d in range(days):
            day = day_of_readings(first_day + timedelta(days=d), tracks, d, rng)
            day = day[: readings - written]
            for start in range(0, len(day), BATCH):
                write_batch(conn, day[start : start + BATCH], agg)
            written += len(day)
            print(f"\rday {d + 1}/{days}: {written:,} readings", end="", flush=True)
    took = time.perf_counter() - started
    stop.set()
    if thread is not None:
        thread.join()
    print()
    return {
        "readings": written,
        "days": days,
        "fill_s": round(took, 1),
        "readings_per_s": round(written / took),
        "last_day": last_day.date().isoformat(),
        "keeper_analyzed": analyzed,
    }


def busiest_hour(url: str, last_day: datetime) -> tuple[datetime, int]:
    """The hour of the last day with the most resolution-10 cells, and one of its cells."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT window_start, count(*) FROM cell_windows"
            " WHERE resolution = 10 AND window_s = 3600"
            " AND window_start >= %s AND window_start < %s"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
            (last_day, last_day + timedelta(days=1)),
        ).fetchone()
        assert row is not None, "no hourly windows on the last day"
        cell = conn.execute(
            "SELECT cell FROM cell_windows WHERE resolution = 10 AND window_s = 3600"
            " AND window_start = %s ORDER BY pm25_n DESC LIMIT 1",
            (row[0],),
        ).fetchone()
        assert cell is not None
    return row[0], int(cell[0])


def percentiles(samples_s: list[float], timeouts: int) -> dict[str, float | int]:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return {"n": 0, "timeouts": timeouts}
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
        "max_ms": round(ms[-1], 1),
        "timeouts": timeouts,
    }


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds used so far by the whole server, from /proc: the postmaster, its
    children alive (the backends serving the API's pool among them, and whatever
    background work runs: autovacuum, the checkpointer) and those that ended (the
    postmaster's reaped children's time), so that a backend exiting between two
    readings does not take its CPU out of the difference."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == postmaster:
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(
    servers: dict[str, tuple[str, int]],
    key: str,
    requests: dict[str, list[tuple[str, dict[str, str]]]],
    repeat: int,
    timeout: float,
    postmaster: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each request kind ``repeat`` times on each server (name: (base URL, pid)), the
    servers taking turns request by request and going first in turn, so that the
    machine's load falls on them alike; per server and kind the percentiles and the
    server process's CPU per request (from /proc), and with ``postmaster`` (a local
    cluster's) its backends' CPU per request too (background work included)."""
    names = list(servers)
    clients = {
        name: httpx.Client(base_url=base, timeout=timeout, headers={"X-API-Key": key})
        for name, (base, _pid) in servers.items()
    }
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    try:
        for kind, calls in requests.items():
            took: dict[str, list[float]] = {name: [] for name in names}
            timeouts = dict.fromkeys(names, 0)
            cpu = dict.fromkeys(names, 0.0)
            db_cpu = dict.fromkeys(names, 0.0)
            for round_ in range(repeat):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for path, params in calls:
                    for name in order:
                        pid = servers[name][1]
                        used = cpu_s(pid)
                        db_used = postgres_cpu_s(postmaster) if postmaster else 0.0
                        started = time.perf_counter()
                        try:
                            response = clients[name].get(path, params=params)
                        except httpx.TimeoutException:
                            timeouts[name] += 1
                            continue
                        elapsed = time.perf_counter() - started
                        cpu[name] += cpu_s(pid) - used
                        if postmaster:
                            db_cpu[name] += postgres_cpu_s(postmaster) - db_used
                        if response.status_code != 200:
                            raise RuntimeError(
                                f"{name} {path} {params}: {response.status_code} "
                                f"{response.text[:200]}"
                            )
                        took[name].append(elapsed)
            for name in names:
                row = percentiles(took[name], timeouts[name])
                row["api_cpu_ms_per_request"] = round(1000 * cpu[name] / max(len(took[name]), 1), 1)
                if postmaster:
                    row["postgres_cpu_ms_per_request"] = round(
                        1000 * db_cpu[name] / max(len(took[name]), 1), 1
                    )
                out[name][kind] = row
                print(
                    f"{name:9s} {kind:20s} p50 {row.get('p50_ms', '-'):>8} ms"
                    f"  p95 {row.get('p95_ms', '-'):>8} ms  API CPU"
                    f" {row['api_cpu_ms_per_request']:>6} ms/request"
                    f"  PostgreSQL {row.get('postgres_cpu_ms_per_request', '-'):>6} ms"
                    f"  ({row['n']} answered, {timeouts[name]} timed out)"
                )
    finally:
        for client in clients.values():
            client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--statistics", choices=("keeper", "none"), default="keeper")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve the reads with the code of this git revision (an API server of "
        "its own on the same database, taking turns with this one): before and after "
        "in one run",
    )
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    keeper = StatisticsKeeper() if args.statistics == "keeper" else None
    results: dict[str, Any] = {
        "statistics": args.statistics,
        "machine": platform.platform(),
        "when": now.isoformat(),
        "load_average_before": list(os.getloadavg()),
    }
    with database() as url:
        results["fill"] = fill(url, args.readings, now, keeper)
        last_day = datetime.fromisoformat(results["fill"]["last_day"]).replace(tzinfo=UTC)
        # The weekly roll-ups as bikesense ingest's roll-up round leaves them
        # (stream.maintenance.keep_rollups): long ranges are read from them.
        results["rollups"] = roll_up(url)
        results.update(read_backlog(url, now, last_day, args))
    results["load_average_after"] = list(os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"reads-{args.statistics}.json").write_text(json.dumps(results, indent=2) + "\n")


def roll_up(url: str) -> dict[str, Any]:
    """One roll-up round on the backlog (storage.rollups: the weeks over, and the days
    over of the week not over), its time and PostgreSQL CPU."""
    with psycopg.connect(url, autocommit=True) as conn:
        postmaster = _postmaster(conn)
        used = postgres_cpu_s(postmaster) if postmaster else 0.0
        started = time.perf_counter()
        report = refresh_rollups(conn)
        took = time.perf_counter() - started
        cpu = postgres_cpu_s(postmaster) - used if postmaster else None
    return {
        "weeks": report.rolled,
        "weeks_to_date": report.to_date,
        "s": round(took, 1),
        "postgres_cpu_s": cpu,
    }


def _postmaster(conn: psycopg.Connection[Any]) -> int | None:
    """The local cluster's postmaster pid (None for a server elsewhere)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        stat = Path(f"/proc/{row[0] if row else 0}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def read_backlog(
    url: str, now: datetime, last_day: datetime, args: argparse.Namespace
) -> dict[str, Any]:
    """The officer's reads of the backlog, from this code (and ``args.baseline``'s)."""
    results: dict[str, Any] = {}
    hour, cell = busiest_hour(url, last_day)
    with psycopg.connect(url, autocommit=True) as conn:
        key = create_key(conn, Role.OFFICER, "bench").token
        postmaster = _postmaster(conn)
    one_hour = {"from": hour.isoformat(), "to": (hour + timedelta(hours=1)).isoformat()}
    long = {"from": (now - timedelta(days=400)).isoformat(), "to": now.isoformat()}
    day = {"from": last_day.isoformat(), "to": (last_day + timedelta(days=1)).isoformat()}
    lat, lon = h3i.cell_to_latlng(cell)
    tiles = list(town_tiles(14))
    requests = {
        "cells_hour": [
            ("/v1/cells", {"resolution": "10", "metric": "pm25", "bbox": TOWN_BBOX, **one_hour})
        ],
        "timeseries_day": [
            (
                "/v1/timeseries",
                {"cell": format(cell, "x"), "metric": "pm25", "bucket": "1h", **day},
            )
        ],
        "tiles_hour": [(f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png", one_hour) for t in tiles],
        "cells_400_days": [
            ("/v1/cells", {"resolution": "10", "metric": "pm25", "bbox": TOWN_BBOX, **long})
        ],
        "timeseries_400_days": [
            (
                "/v1/timeseries",
                {"cell": format(cell, "x"), "metric": "pm25", "bucket": "1d", **long},
            )
        ],
    }
    results["hour"] = hour.isoformat()
    results["cell"] = format(cell, "x")
    results["cell_latlng"] = [lat, lon]
    results["tiles"] = len(tiles)
    with ExitStack() as stack:
        servers = {"this": stack.enter_context(api_server(url))}
        if args.baseline:
            code = stack.enter_context(checkout(args.baseline))
            servers["baseline"] = stack.enter_context(api_server(url, code))
        measured = measure(servers, key, requests, args.repeat, args.timeout, postmaster)
    results["reads"] = measured["this"]
    if args.baseline:
        results["baseline"] = {"rev": args.baseline, "reads": measured["baseline"]}
    with psycopg.connect(url) as conn:
        results["last_analyze"] = {
            name: [str(manual), str(auto)]
            for name, manual, auto in conn.execute(
                "SELECT relname, last_analyze, last_autoanalyze FROM pg_stat_user_tables"
                " WHERE relname IN ('cell_windows', 'window_rides', 'window_presence',"
                " 'h3_cells') ORDER BY 1"
            ).fetchall()
        }
    return results


if __name__ == "__main__":
    main()
