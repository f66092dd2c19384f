"""Run every benchmark, then print one table of headline figures against the targets.

Each benchmark is its own script and writes its own ``bench/results/<name>.json``;
this runs them one after the other (they would disturb each other side by side),
then collects their JSON into ``bench/results/summary.json`` under stable keys.

    .venv/bin/python bench/run_all.py                 # run everything (15 to 30 minutes)
    .venv/bin/python bench/run_all.py --only decode e2e
    .venv/bin/python bench/run_all.py --collect-only  # table and summary from the last results

Benchmarks are not tests: a shared machine makes them noisy, so nothing here
fails on a missed target; the table says "missed" and the JSON keeps the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def dig(doc: Any, *path: str | int) -> Any:
    """doc[a][b]... or None when any step is missing."""
    for step in path:
        if isinstance(doc, dict):
            doc = doc.get(step if step in doc else str(step))
        else:
            return None
    return doc


@dataclass(frozen=True)
class Headline:
    key: str  # stable key in summary.json
    label: str
    unit: str
    get: Callable[[Any], Any]
    target: float | None = None
    higher_is_better: bool = True


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    headlines: tuple[Headline, ...]


def kafka_losses(doc: Any) -> int | None:
    """Lost plus duplicated readings over the distributed benchmark's Kafka contenders."""
    found = [dig(doc, "summary", name) for name in ("kafka, 1 worker", "kafka, 2 workers")]
    if any(f is None for f in found):
        return None
    return sum(f["lost"] + f["duplicated"] for f in found)


WRITER_KEY = "batch writer + stream aggregation (4 res x 4 windows)"
BENCHMARKS = (
    Benchmark(
        "decode",
        "bench_decode.py",
        (
            Headline(
                "decode_10_per_frame_readings_per_s",
                "decode_readings, 10-reading frames",
                "readings/s",
                lambda d: dig(d, "summary", "decode_readings_per_s_by_frame_size", 10),
                1_000_000,
            ),
            Headline(
                "decode_many_10_per_frame_readings_per_s",
                "decode_readings_many, 10-reading frames",
                "readings/s",
                lambda d: dig(d, "summary", "decode_readings_many_per_s_by_frame_size", 10),
                1_000_000,
            ),
            Headline(
                "decode_128_per_frame_readings_per_s",
                "decode_readings, 128-reading frames",
                "readings/s",
                lambda d: dig(d, "summary", "decode_readings_per_s_by_frame_size", 128),
                1_000_000,
            ),
        ),
    ),
    Benchmark(
        "e2e",
        "bench_e2e.py",
        (
            Headline(
                "e2e_readings_per_s",
                "end to end, MQTT → PostgreSQL",
                "readings/s",
                lambda d: dig(d, "pipeline", "readings_per_s"),
                20_000,
            ),
            Headline(
                "e2e_ratio_to_bare_copy",
                "end to end / bare COPY",
                "x",
                lambda d: dig(d, "ratios", "to_bare_copy"),
                0.5,
            ),
            Headline(
                "e2e_ratio_to_naive",
                "end to end / naive INSERT per reading",
                "x",
                lambda d: dig(d, "ratios", "to_naive"),
                20,
            ),
            Headline(
                "e2e_p99_latency_paced_s",
                "publish → visible via API, p99 (paced)",
                "s",
                lambda d: dig(d, "pipeline", "paced_latency_p99_s"),
                1.0,
                False,
            ),
            Headline(
                "e2e_lost_plus_duplicated",
                "lost + duplicated readings",
                "readings",
                lambda d: (
                    None
                    if dig(d, "pipeline", "lost") is None
                    else d["pipeline"]["lost"] + d["pipeline"]["duplicated"]
                ),
                0,
                False,
            ),
        ),
    ),
    Benchmark(
        "distributed",
        "bench_distributed.py",
        (
            # Side by side in one run: the embedded runtime's figure here is the reference for
            # the Kafka ones, not a replacement for bench_e2e.py's.
            Headline(
                "distributed_embedded_readings_per_s",
                "beside Kafka: embedded runtime",
                "readings/s",
                lambda d: dig(d, "summary", "embedded", "readings_per_s"),
            ),
            Headline(
                "distributed_1_worker_readings_per_s",
                "ingest → Kafka → 1 faust worker → PG",
                "readings/s",
                lambda d: dig(d, "summary", "kafka, 1 worker", "readings_per_s"),
            ),
            Headline(
                "distributed_2_workers_readings_per_s",
                "ingest → Kafka → 2 faust workers → PG",
                "readings/s",
                lambda d: dig(d, "summary", "kafka, 2 workers", "readings_per_s"),
            ),
            Headline(
                "distributed_1_worker_p99_latency_paced_s",
                "Kafka, 1 worker: p99 (paced)",
                "s",
                lambda d: dig(d, "summary", "kafka, 1 worker", "paced_latency_p99_s"),
                1.0,
                False,
            ),
            Headline(
                "distributed_2_workers_p99_latency_paced_s",
                "Kafka, 2 workers: p99 (paced)",
                "s",
                lambda d: dig(d, "summary", "kafka, 2 workers", "paced_latency_p99_s"),
                1.0,
                False,
            ),
            Headline(
                "distributed_lost_plus_duplicated",
                "Kafka runs: lost + duplicated",
                "readings",
                kafka_losses,
                0,
                False,
            ),
        ),
    ),
    Benchmark(
        "write",
        "bench_write.py",
        (
            Headline(
                "write_batch_writer_readings_per_s",
                "storage batch writer + aggregation",
                "readings/s",
                lambda d: dig(d, "results", WRITER_KEY, "readings_per_s"),
            ),
        ),
    ),
    Benchmark(
        "tiles",
        "bench_tiles.py",
        (
            Headline(
                "tiles_public_24h_p95_ms",
                "tile, uncached, public last 24 h, p95",
                "ms",
                lambda d: dig(d, "public_last_24h", "all", "p95_ms"),
                50,
                False,
            ),
            Headline(
                "tiles_public_7d_p95_ms",
                "tile, uncached, public 7 days, p95",
                "ms",
                lambda d: dig(d, "public_7_days", "all", "p95_ms"),
                50,
                False,
            ),
            Headline(
                "tiles_public_30d_p95_ms",
                "tile, uncached, public 30 days, p95",
                "ms",
                lambda d: dig(d, "public_30_days", "all", "p95_ms"),
                50,
                False,
            ),
        ),
    ),
    Benchmark(
        "export",
        "bench_export.py",
        (
            # Medians of the repeated runs (the best run is in export.json too).
            Headline(
                "export_csv_rows_per_s",
                "export CSV, researcher, median",
                "rows/s",
                lambda d: dig(d, "csv", "rows_per_s_median"),
                200_000,
            ),
            Headline(
                "export_parquet_rows_per_s",
                "export Parquet, researcher, median",
                "rows/s",
                lambda d: dig(d, "parquet", "rows_per_s_median"),
                200_000,
            ),
            Headline(
                "export_parquet_peak_rss_mib",
                "export server peak RSS (Parquet)",
                "MiB",
                lambda d: (
                    None
                    if dig(d, "parquet", "server_peak_rss_kib") is None
                    else d["parquet"]["server_peak_rss_kib"] / 1024
                ),
            ),
        ),
    ),
    Benchmark(
        "mqtt_protocol",
        "bench_mqtt_protocol.py",
        (
            Headline(
                "mqtt_v311_msgs_per_s",
                "paho subscriber, MQTT 3.1.1, QoS 1",
                "msgs/s",
                lambda d: dig(d, "v311_msgs_per_s"),
            ),
        ),
    ),
)


def verdict(h: Headline, value: Any) -> str:
    if value is None:
        return "no figure"
    if h.target is None:
        return ""
    ok = value >= h.target if h.higher_is_better else value <= h.target
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=[b.name for b in BENCHMARKS])
    parser.add_argument(
        "--collect-only",
        action="store_true",
        help="run nothing; summarise the JSON files already in bench/results",
    )
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]

    runs: dict[str, dict[str, Any]] = {}
    if not args.collect_only:
        for b in chosen:
            print(f"==> {b.script}", flush=True)
            started = time.monotonic()
            code = subprocess.call([sys.executable, str(BENCH / b.script)], cwd=BENCH.parent)
            runs[b.name] = {"exit_code": code, "seconds": round(time.monotonic() - started, 1)}

    summary: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "benchmarks": {},
    }
    rows = []
    for b in BENCHMARKS:
        path = RESULTS / f"{b.name}.json"
        doc = json.loads(path.read_text()) if path.exists() else None
        when = dig(doc, "when") or dig(doc, "date")
        entry: dict[str, Any] = {
            "file": f"bench/results/{b.name}.json",
            "when": when,
            "run": runs.get(b.name),
            "figures": {},
        }
        for h in b.headlines:
            value = h.get(doc) if doc is not None else None
            entry["figures"][h.key] = {
                "value": value,
                "unit": h.unit,
                "target": h.target,
                "verdict": verdict(h, value),
            }
            rows.append((h.label, value, h.unit, h.target, verdict(h, value), str(when)[:16]))
        summary["benchmarks"][b.name] = entry
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\n{'figure':<46} {'value':>14} {'unit':<11} {'target':>10} {'':<9} measured")
    for label, value, unit, target, word, when in rows:
        if value is None:
            shown = "-"
        elif isinstance(value, int) or abs(value) >= 10:
            shown = f"{value:,.0f}"
        else:
            shown = f"{value:,.3f}"
        goal = "" if target is None else f"{target:,}"
        print(f"{label:<46} {shown:>14} {unit:<11} {goal:>10} {word:<9} {when}")
    print(f"\nwrote {RESULTS / 'summary.json'}")


if __name__ == "__main__":
    main()
