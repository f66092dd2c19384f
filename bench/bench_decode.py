"""Frame decoding speed: readings per second on one core, by frame size.

Times, for frames of 1 to 1024 readings (docs/protocol.md):

* ``decode_readings`` -- the numpy fast path ingest uses (authenticate + decode);
* the ceiling of any decoder: the envelope alone (CRC-32 and HMAC-SHA256 over
  the same bytes, which every frame must pay whatever the decoding);
* the naive way: the object API, ``decode_frame``, one ``Reading`` at a time;
* ``encode_readings``, for the simulators' sake;
* ``decode_readings_many`` (firmware_protocol/batch.py), many frames at once as
  ingest receives them: batches of ``--batch`` frames of 1 to 128 readings, each
  frame authenticated on its own, the readings of all decoded in one numpy pass.

Each figure is the best of several timed runs (the machine's capability: other
processes on a shared box only ever slow a run down) with the median beside
it. Prints a table and writes ``bench/results/decode.json``.

    .venv/bin/python bench/bench_decode.py [--seconds 0.4] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import os
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

# Import this checkout's package even where the venv's editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from firmware_protocol import (
    MAX_READINGS_PER_FRAME,
    decode_frame,
    decode_readings,
    decode_readings_many,
    empty_readings,
    encode_readings,
)

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"
SIZES = (1, 10, 16, 64, 128, 256, MAX_READINGS_PER_FRAME)
BATCH_SIZES = (1, 10, 16, 64, 128)
TARGET = 1_000_000  # readings/s on one core, docs/design.md, "Quality bars"
KEY = bytes(range(32))


def ride(n: int, seed: int) -> np.ndarray:
    """n plausible 1 Hz readings: every sensor present, a few absences."""
    rng = np.random.default_rng(seed)
    r = empty_readings(n)
    r["ts_ms"] = 1_767_225_600_000 + np.arange(n) * 1000
    r["lat_deg"] = 52.37 + np.cumsum(rng.normal(0, 2e-5, n))
    r["lon_deg"] = 4.89 + np.cumsum(rng.normal(0, 3e-5, n))
    r["gnss_fix"] = 2
    r["hdop"] = rng.uniform(0.6, 3, n)
    r["satellites"] = rng.integers(4, 30, n)
    r["speed_mps"] = rng.uniform(0, 8, n)
    for name, hi in (("pm1_ugm3", 30), ("pm25_ugm3", 60), ("pm10_ugm3", 120), ("no2_ugm3", 150)):
        r[name] = rng.uniform(0, hi, n)
    r["no2_ugm3"][rng.random(n) < 0.2] = np.nan
    r["noise_laeq_db"] = rng.uniform(45, 85, n)
    r["noise_lamax_db"] = r["noise_laeq_db"] + rng.uniform(0, 15, n)
    r["interval_ms"] = 1000
    r["temperature_c"] = rng.uniform(-5, 30, n)
    r["humidity_pct"] = rng.uniform(30, 100, n)
    r["status"] = np.where(rng.random(n) < 0.02, 2, 0)
    return r


def timed(fn: Callable[[], object], seconds: float, runs: int) -> dict[str, list[float]]:
    """Seconds per call, one figure per run, by the wall clock and by this thread's CPU clock.

    On a shared machine the wall clock measures the share of a core this process
    got; the thread's CPU time measures what decoding costs on one core.
    """
    loops, elapsed = 1, 0.0
    while elapsed < seconds / 5:  # calibrate the loop count
        loops *= 2
        start = time.thread_time()
        for _ in range(loops):
            fn()
        elapsed = time.thread_time() - start
    loops = max(1, int(loops * seconds / elapsed))
    wall, cpu = [], []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(loops):
            fn()
        cpu.append((time.thread_time() - start_cpu) / loops)
        wall.append((time.perf_counter() - start_wall) / loops)
    return {"wall": wall, "cpu": cpu}


def envelope_only(frame: bytes) -> Callable[[], object]:
    def check() -> object:
        view = memoryview(frame)
        zlib.crc32(view[:-20])
        return hmac.compare_digest(hmac.digest(KEY, view[:-16], "sha256")[:16], view[-16:])

    return check


def figures(per_call: dict[str, list[float]], n: int) -> dict[str, float]:
    out = {}
    for clock, values in per_call.items():
        best, median = min(values), statistics.median(values)
        out[f"{clock}_us_per_frame_best"] = best * 1e6
        out[f"{clock}_us_per_frame_median"] = median * 1e6
        out[f"{clock}_readings_per_s_best"] = n / best
        out[f"{clock}_readings_per_s_median"] = n / median
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per figure")
    parser.add_argument(
        "--batch", type=int, default=1000, help="frames per decode_readings_many call"
    )
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = {}
    fast_by_size: dict[int, dict[str, float]] = {}
    print("readings per second of one core's CPU time (best run; wall clock best in brackets)")
    print(
        f"{'readings/frame':>14} {'bytes':>6} | {'decode_readings':>25} | "
        f"{'envelope only':>13} | {'decode_frame':>12} | {'encode_readings':>15}"
    )
    for n in SIZES:
        readings = ride(n, seed=n)
        frame = encode_readings(4711, 3, 17, readings, KEY)
        assert decode_readings(frame, KEY).readings.shape == (n,)
        fast = figures(timed(partial(decode_readings, frame, KEY), args.seconds, args.runs), n)
        ceiling = figures(timed(envelope_only(frame), args.seconds, args.runs), n)
        naive = figures(timed(partial(decode_frame, frame, KEY), args.seconds, 3), n)
        encode = figures(
            timed(partial(encode_readings, 4711, 3, 17, readings, KEY), args.seconds, 3), n
        )
        fast_by_size[n] = fast
        results[str(n)] = {
            "frame_bytes": len(frame),
            "decode_readings": fast,
            "envelope_only_ceiling": ceiling,
            "decode_frame_naive": naive,
            "encode_readings": encode,
            "fast_vs_naive": fast["cpu_readings_per_s_best"] / naive["cpu_readings_per_s_best"],
            "fast_vs_ceiling": (
                fast["cpu_readings_per_s_best"] / ceiling["cpu_readings_per_s_best"]
            ),
        }
        print(
            f"{n:>14} {len(frame):>6} | {fast['cpu_readings_per_s_best']:>11,.0f} "
            f"({fast['wall_readings_per_s_best']:>11,.0f}) | "
            f"{ceiling['cpu_readings_per_s_best']:>13,.0f} | "
            f"{naive['cpu_readings_per_s_best']:>12,.0f} | "
            f"{encode['cpu_readings_per_s_best']:>15,.0f}"
        )

    print(
        f"\nmany frames at once: decode_readings_many over {args.batch:,} frames "
        "(readings/s of one core's CPU time, best run; wall clock in brackets)"
    )
    print(f"{'readings/frame':>14} | {'decode_readings_many':>27} | {'vs one at a time':>16}")
    batched: dict[str, dict[str, object]] = {}
    for n in BATCH_SIZES:
        payloads = [
            encode_readings(4711, 3, seq, ride(n, seed=seq), KEY) for seq in range(args.batch)
        ]
        assert len(decode_readings_many(payloads, KEY).readings) == n * args.batch
        many = figures(
            timed(partial(decode_readings_many, payloads, KEY), args.seconds, args.runs),
            n * args.batch,
        )
        one = results[str(n)]["decode_readings"] if str(n) in results else None
        ratio = (
            many["cpu_readings_per_s_best"] / one["cpu_readings_per_s_best"]  # type: ignore[index]
            if one
            else None
        )
        batched[str(n)] = {
            "frames_per_call": args.batch,
            "decode_readings_many": many,
            "vs_decode_readings": ratio,
        }
        print(
            f"{n:>14} | {many['cpu_readings_per_s_best']:>13,.0f} "
            f"({many['wall_readings_per_s_best']:>11,.0f}) | "
            + (f"{ratio:>15.1f}x" if ratio else f"{'':>16}")
        )

    decode = {n: fast_by_size[n]["cpu_readings_per_s_best"] for n in SIZES}
    above = [n for n in SIZES if decode[n] > TARGET]
    summary = {
        "target_readings_per_s": TARGET,
        "smallest_frame_above_target": min(above) if above else None,
        "clock": "CPU time of the decoding thread (time.thread_time)",
        "decode_readings_per_s_by_frame_size": decode,
        "decode_readings_many_per_s_by_frame_size": {
            int(n): b["decode_readings_many"]["cpu_readings_per_s_best"]  # type: ignore[index]
            for n, b in batched.items()
        },
        "smallest_frame_above_target_batched": min(
            (
                int(n)
                for n, b in batched.items()
                if b["decode_readings_many"]["cpu_readings_per_s_best"] > TARGET
            ),  # type: ignore[index]
            default=None,
        ),
    }
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "what": "firmware_protocol decode, one core, single thread",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "method": (
            f"best and median of {args.runs} runs of ~{args.seconds}s each, by the "
            "thread's CPU clock (cost on one core) and by the wall clock (affected by "
            "whatever else the machine runs)"
        ),
        "summary": summary,
        "by_frame_size": results,
        "batched_by_frame_size": batched,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(RESULTS)
    smallest = summary["smallest_frame_above_target"]
    print(
        f"\nabove {TARGET:,} readings/s from {smallest} readings per frame"
        if smallest
        else f"\nbelow {TARGET:,} readings/s at every frame size"
    )
    smallest_batched = summary["smallest_frame_above_target_batched"]
    print(
        f"batched: above {TARGET:,} readings/s from {smallest_batched} readings per frame"
        if smallest_batched
        else f"batched: below {TARGET:,} readings/s at every frame size"
    )
    print(f"load average at end: {os.getloadavg()}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
