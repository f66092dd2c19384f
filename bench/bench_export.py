"""Raw-reading exports through the API: rows/s per format and the server's memory.

Fills a throwaway PostgreSQL with N readings (a fleet's rides, written by the
storage writer), then streams the whole range through ``GET /v1/exports/readings``
as CSV, Parquet and GeoJSON from a server in its own process, reading its
resident memory before and after. For scale, in the same run: the machine's
own ceiling, a bare ``COPY (SELECT ...) TO STDOUT`` of the same rows, and the
storage layer's numpy stream (``storage.queries.iter_readings``) alone.

    .venv/bin/python bench/bench_export.py [--readings 1000000]

Writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, api_server, database, rss_kib

from api.keys import create_key
from api.roles import Role
from storage.queries import iter_readings
from storage.writer import write_batch
from stream.core.batch import ENRICHED_DTYPE
from stream.core.partials import PARTIAL_DTYPE, PRESENCE_DTYPE

T0 = datetime(2026, 10, 1, tzinfo=UTC)
LAT0, LON0 = 52.129, 4.656


def fleet_readings(n: int, kits: int = 50, seed: int = 1) -> np.ndarray:
    """``n`` one-second readings spread over ``kits`` kits riding random walks, one day each."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    i = np.arange(n)
    kit = i % kits
    step = i // kits
    out["kit_id"] = kit + 1
    out["boot_id"] = 1
    out["seq"] = step // 10
    out["idx"] = step % 10
    out["ts_ms"] = int(T0.timestamp() * 1000) + step * 1000
    walk = np.cumsum(rng.normal(0, 3e-5, (2, n)), axis=1)
    out["lat_deg"] = LAT0 + walk[0] % 0.05
    out["lon_deg"] = LON0 + walk[1] % 0.08
    out["gnss_fix"] = 2
    out["hdop"] = 0.9
    out["satellites"] = 9
    out["speed_mps"] = 4.2
    out["pm1_ugm3"] = rng.gamma(2, 3, n)
    out["pm25_ugm3"] = rng.gamma(2, 5, n)
    out["pm10_ugm3"] = rng.gamma(2, 8, n)
    out["no2_ugm3"] = rng.gamma(3, 8, n)
    out["noise_laeq_db"] = rng.normal(62, 6, n)
    out["noise_lamax_db"] = out["noise_laeq_db"] + 5
    out["interval_ms"] = 1000
    out["temperature_c"] = 11.5
    out["humidity_pct"] = 70.0
    out["cell"] = 0x8C196948D573BFF  # one res-12 cell: exports do not look at cells
    out["ride_id"] = kit + 1
    out["received_ms"] = out["ts_ms"] + 2000
    return out


def no_aggregates(_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)


def fill(url: str, n: int) -> None:
    readings = fleet_readings(n)
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, n, 200_000):
            write_batch(conn, readings[start:start + 200_000], no_aggregates)
        conn.execute("VACUUM ANALYZE readings")


def bare_copy(url: str, end: datetime) -> float:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        size = 0
        with cur.copy("COPY (SELECT * FROM readings WHERE ts >= %s AND ts < %s "
                      "ORDER BY ts, kit_id, boot_id, seq, idx) TO STDOUT (FORMAT csv)"
                      .replace("%s", "'{}'").format(T0.isoformat(), end.isoformat())) as copy:
            for data in copy:
                size += len(data)
        return time.perf_counter() - started


def numpy_stream(url: str, end: datetime) -> tuple[float, int]:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        rows = sum(len(c) for c in iter_readings(conn, start=T0, end=end))
        return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.readings
    end = T0 + timedelta(days=2)
    results: dict[str, object] = {"readings": n, "machine": platform.platform(),
                                  "python": platform.python_version(),
                                  "when": datetime.now(UTC).isoformat()}
    with database() as url:
        t = time.perf_counter()
        fill(url, n)
        print(f"filled {n:,} readings in {time.perf_counter() - t:.1f} s")
        with psycopg.connect(url, autocommit=True) as conn:
            key = create_key(conn, Role.RESEARCHER, "bench").token
        dt = bare_copy(url, end)
        results["ceiling_copy_csv_rows_per_s"] = round(n / dt)
        dt, rows = numpy_stream(url, end)
        assert rows == n
        results["storage_numpy_stream_rows_per_s"] = round(n / dt)
        with api_server(url) as (base, pid):
            rss_before, _ = rss_kib(pid)
            results["server_rss_before_kib"] = rss_before
            for fmt in ("csv", "parquet", "geojson"):
                started = time.perf_counter()
                size = 0
                with httpx.stream("GET", f"{base}/v1/exports/readings",
                                  params={"format": fmt, "from": T0.isoformat(),
                                          "to": end.isoformat()},
                                  headers={"X-API-Key": key}, timeout=600) as response:
                    response.raise_for_status()
                    for data in response.iter_bytes():
                        size += len(data)
                dt = time.perf_counter() - started
                rss, peak = rss_kib(pid)
                results[fmt] = {"rows_per_s": round(n / dt), "seconds": round(dt, 2),
                                "bytes": size, "server_rss_after_kib": rss,
                                "server_peak_rss_kib": peak}
                print(f"{fmt:8s} {n / dt:>12,.0f} rows/s  {size / 1e6:8.1f} MB  "
                      f"server RSS {rss / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)")
    print(f"ceiling (bare COPY csv): {results['ceiling_copy_csv_rows_per_s']:,} rows/s; "
          f"storage numpy stream: {results['storage_numpy_stream_rows_per_s']:,} rows/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
