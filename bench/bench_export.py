"""Raw-reading exports through the API: rows/s per format and role, and the server's memory.

Fills a throwaway PostgreSQL with N readings (a fleet's rides, written by the
storage writer, flagged as on a humid day: 40 % carry ``HUMID_PM``, a few
more flags too, so the decoded ``qa_flag_names`` costs what it does on real
data), then streams them through ``GET /v1/exports/readings`` as CSV, Parquet
and GeoJSON from a server in its own process. In the same run:

* the machine's own ceiling, a bare ``COPY (SELECT * ... ORDER BY ...) TO
  STDOUT (FORMAT csv)`` of the same rows read by psycopg, with nothing else;
* every format as a researcher (daily pseudonyms: the privacy-relevant path,
  the top-level ``csv`` / ``parquet`` / ``geojson`` keys) and as an admin;
* memory: for each format, the server's peak resident memory (VmHWM) over a
  researcher export of N/4 readings and of N readings, each in a fresh server
  process, side by side: flat memory means a ratio near 1;
* CPU seconds of the database backends and of the API process for each
  export (``/proc``): on a shared machine they say more than rows/s do.

The ceiling and the exports are repeated ``--repeat`` times, interleaved, so
that a neighbour's load falls on all of them alike; each figure is the best
and the median of its runs.

    .venv/bin/python bench/bench_export.py [--readings 1000000] [--repeat 3] [--corrections]

With ``--corrections``, every kit has a stored correction of PM1, PM2.5, PM10 (with a
humidity term) and NO2 (with a temperature term) over the whole range, so every
reading's corrected columns are computed: the exports' worst case for their cost.

Writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, api_server, database, rss_kib

from api.keys import create_key
from api.roles import Role
from storage.corrections import store_fit
from storage.pseudonyms import PseudonymKey
from storage.writer import write_batch
from stream.core.batch import ENRICHED_DTYPE
from stream.core.calibration_corrections import Correction, CorrectionSet
from stream.core.calibration_periods import PeriodFit
from stream.core.partials import PARTIAL_DTYPE, PRESENCE_DTYPE
from stream.core.qa import QaFlag

T0 = datetime(2026, 10, 1, tzinfo=UTC)
LAT0, LON0 = 52.129, 4.656
KITS = 50
FORMATS = ("csv", "parquet", "geojson")


def fleet_readings(n: int, kits: int = KITS, seed: int = 1) -> np.ndarray:
    """``n`` one-second readings spread over ``kits`` kits riding random walks."""
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
    # A humid day's flags: 40 % HUMID_PM (5 % with a low battery too), 5 % warming up.
    flags = np.array(
        [
            0,
            QaFlag.HUMID_PM,
            QaFlag.HUMID_PM | QaFlag.LOW_BATTERY,
            QaFlag.WARMING_UP | QaFlag.NO2_WARMING_UP,
        ],
        dtype=np.uint32,
    )
    out["qa_flags"] = rng.choice(flags, n, p=[0.55, 0.35, 0.05, 0.05])
    out["cell"] = 0x8C196948D573BFF  # one res-12 cell: exports do not look at cells
    # A new ride every 2 hours per kit, as a round with breaks would give.
    out["ride_id"] = (kit + 1) * 1000 + step // 7200
    out["received_ms"] = out["ts_ms"] + 2000
    return out


def no_aggregates(_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)


def fill(url: str, n: int) -> None:
    readings = fleet_readings(n)
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, n, 200_000):
            write_batch(conn, readings[start : start + 200_000], no_aggregates)
        conn.execute("VACUUM ANALYZE readings")


def store_corrections(url: str, n: int, kits: int = KITS) -> None:
    """A correction of each calibrated metric for every kit over the readings' UTC days."""
    day_ms = 86_400_000
    lo = int(T0.timestamp() * 1000) // day_ms * day_ms
    hi = -(-int(end_of(n).timestamp() * 1000) // day_ms) * day_ms
    own = {}
    for kit in range(1, kits + 1):
        for i, metric in enumerate(("pm1_ugm3", "pm25_ugm3", "pm10_ugm3", "no2_ugm3")):
            pm = metric != "no2_ugm3"
            own[(kit, metric)] = Correction(
                metric=metric,
                kit_id=kit,
                source="kit",
                params=(1.0 + 0.01 * kit, 1.1, 0.2 if pm else 0.0, 0.0 if pm else 0.3),
                covariance=tuple(tuple(1e-3 * (r == c) for c in range(4)) for r in range(4)),
                terms=("offset", "gain", "humidity" if pm else "temperature"),
                n_pairs=20,
                kit_pairs=20,
                window_start_ms=lo,
                window_end_ms=hi,
                residual_sd=1.0,
                humid_rh_pct=75.0,
                temperature_ref_c=20.0,
                version=f"1-{kit:04x}{i:020x}",
            )
    fit = PeriodFit(lo, hi, CorrectionSet(lo, hi, kits=own))
    metrics = ["pm1_ugm3", "pm25_ugm3", "pm10_ugm3", "no2_ugm3"]
    with psycopg.connect(url, autocommit=True) as conn:
        store_fit(conn, [fit], {(lo, hi): list(range(1, kits + 1))}, metrics)


def end_of(rows: int) -> datetime:
    """The end of the range holding the first ``rows`` readings (KITS a second)."""
    return T0 + timedelta(seconds=-(-rows // KITS))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(url: str, application_name: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchall()
        ]


def bare_copy(url: str, end: datetime) -> tuple[float, float]:
    """Seconds and backend CPU seconds of a bare CSV COPY of the range, read by psycopg."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        pid = conn.info.backend_pid
        started, cpu0 = time.perf_counter(), cpu_s(pid)
        with cur.copy(
            "COPY (SELECT * FROM readings WHERE ts >= %s AND ts < %s "
            "ORDER BY ts, kit_id, boot_id, seq, idx) TO STDOUT (FORMAT csv)".replace(
                "%s", "'{}'"
            ).format(T0.isoformat(), end.isoformat())
        ) as copy:
            for _data in copy:
                pass
        return time.perf_counter() - started, cpu_s(pid) - cpu0


def export(url: str, base: str, pid: int, key: str, fmt: str, rows: int) -> dict[str, Any]:
    """One export of the first ``rows`` readings: time, bytes, CPU, memory."""
    httpx.get(f"{base}/healthz", timeout=10)  # the pool's connections exist from here on
    # The peak (VmHWM) from here on: writing 5 to clear_refs resets it (proc(5)).
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    rss_before, _ = rss_kib(pid)
    backends = {p: cpu_s(p) for p in backend_pids(url, "bikesense-api")}
    api_cpu0 = cpu_s(pid)
    started = time.perf_counter()
    size = 0
    with httpx.stream(
        "GET",
        f"{base}/v1/exports/readings",
        params={"format": fmt, "from": T0.isoformat(), "to": end_of(rows).isoformat()},
        headers={"X-API-Key": key},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for data in response.iter_bytes():
            size += len(data)
    seconds = time.perf_counter() - started
    rss_after, peak = rss_kib(pid)
    db_cpu = sum(cpu_s(p) - backends.get(p, 0.0) for p in backend_pids(url, "bikesense-api"))
    return {
        "rows": rows,
        "rows_per_s": round(rows / seconds),
        "seconds": round(seconds, 2),
        "bytes": size,
        "db_cpu_s": round(db_cpu, 2),
        "api_cpu_s": round(cpu_s(pid) - api_cpu0, 2),
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_peak_rss_kib": peak,
    }


def summary(runs: list[dict[str, Any]], ceiling: list[float]) -> dict[str, Any]:
    """Best and median of repeated runs of one export, against the ceiling's."""
    rates = sorted(r["rows_per_s"] for r in runs)
    best = max(runs, key=lambda r: r["rows_per_s"])
    return best | {
        "rows_per_s_median": round(float(np.median(rates))),
        "rows_per_s_runs": [r["rows_per_s"] for r in runs],
        "db_cpu_s_median": round(float(np.median([r["db_cpu_s"] for r in runs])), 2),
        "api_cpu_s_median": round(float(np.median([r["api_cpu_s"] for r in runs])), 2),
        "ratio_to_ceiling": round(best["rows_per_s"] / max(ceiling), 2),
        "ratio_to_ceiling_median": round(float(np.median(rates) / np.median(ceiling)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--corrections", action="store_true", help="store a correction per kit")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    args = parser.parse_args()
    n = args.readings
    small = n // 4
    # The researcher exports need the pseudonym key; the server processes inherit it.
    os.environ["BIKESENSE_PSEUDONYM_KEY"] = PseudonymKey.generate().to_text()
    results: dict[str, Any] = {
        "readings": n,
        "repeat": args.repeat,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with database() as url:
        t = time.perf_counter()
        fill(url, n)
        print(f"filled {n:,} readings in {time.perf_counter() - t:.1f} s")
        results["corrections"] = args.corrections
        if args.corrections:
            store_corrections(url, n)
        with psycopg.connect(url, autocommit=True) as conn:
            keys = {
                role: create_key(conn, role, "bench").token
                for role in (Role.RESEARCHER, Role.ADMIN)
            }
        # Memory: each size in a fresh server, so that the peak belongs to that export alone.
        memory: dict[str, Any] = {}
        for fmt in () if args.no_memory else FORMATS:
            runs = {}
            for rows in (small, n):
                with api_server(url) as (base, pid):
                    runs[rows] = export(url, base, pid, keys[Role.RESEARCHER], fmt, rows)
            peak_small, peak_large = (runs[r]["server_peak_rss_kib"] for r in (small, n))
            memory[fmt] = {
                "rows_small": small,
                "rows_large": n,
                "peak_rss_small_kib": peak_small,
                "peak_rss_large_kib": peak_large,
                "peak_ratio_large_to_small": round(peak_large / peak_small, 3),
                "growth_small_kib": peak_small - runs[small]["server_rss_before_kib"],
                "growth_large_kib": peak_large - runs[n]["server_rss_before_kib"],
            }
            print(
                f"memory     {fmt:8s} peak RSS {peak_small / 1024:.0f} MiB ({small:,} rows) "
                f"vs {peak_large / 1024:.0f} MiB ({n:,} rows)"
            )
        results["memory"] = memory
        # Speed: the ceiling and every export in turn, repeated.
        ceiling: list[float] = []
        ceiling_cpu: list[float] = []
        samples: dict[tuple[Role, str], list[dict[str, Any]]] = {}
        with api_server(url) as (base, pid):
            for rep in range(args.repeat):
                dt, db_cpu = bare_copy(url, end_of(n))
                ceiling.append(n / dt)
                ceiling_cpu.append(db_cpu)
                print(
                    f"[{rep + 1}/{args.repeat}] ceiling (bare COPY csv, psycopg) "
                    f"{n / dt:>10,.0f} rows/s  db cpu {db_cpu:5.1f} s"
                )
                for role in (Role.RESEARCHER, Role.ADMIN):
                    for fmt in FORMATS:
                        run = export(url, base, pid, keys[role], fmt, n)
                        samples.setdefault((role, fmt), []).append(run)
                        print(
                            f"[{rep + 1}/{args.repeat}] {role.value:10s} {fmt:8s} "
                            f"{run['rows_per_s']:>10,.0f} rows/s  "
                            f"{run['bytes'] / 1e6:7.1f} MB  db cpu {run['db_cpu_s']:5.1f} s  "
                            f"api cpu {run['api_cpu_s']:5.1f} s"
                        )
        results["ceiling_copy_csv_rows_per_s"] = round(max(ceiling))
        results["ceiling_copy_csv_rows_per_s_median"] = round(float(np.median(ceiling)))
        results["ceiling_copy_csv_rows_per_s_runs"] = [round(c) for c in ceiling]
        results["ceiling_copy_csv_db_cpu_s_median"] = round(float(np.median(ceiling_cpu)), 2)
        for fmt in FORMATS:
            results[fmt] = summary(samples[(Role.RESEARCHER, fmt)], ceiling) | (
                {"server_peak_rss_kib": memory[fmt]["peak_rss_large_kib"]} if memory else {}
            )
        results["admin"] = {fmt: summary(samples[(Role.ADMIN, fmt)], ceiling) for fmt in FORMATS}
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    for fmt in FORMATS:
        print(
            f"researcher {fmt:8s} best {results[fmt]['rows_per_s']:>10,} rows/s, median "
            f"{results[fmt]['rows_per_s_median']:>10,}; ceiling best "
            f"{results['ceiling_copy_csv_rows_per_s']:,}, median "
            f"{results['ceiling_copy_csv_rows_per_s_median']:,}"
        )


if __name__ == "__main__":
    main()
