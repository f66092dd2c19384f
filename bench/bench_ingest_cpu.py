"""Ingest's CPU per reading, two checkouts side by side: alternating rounds on the same frames.

One PostgreSQL (durable, as deployed) and one Mosquitto for the whole run. Each
round gives one checkout (``--before`` or ``--after``, e.g. an export of an
earlier commit and this one) a fresh database migrated by its own code, starts
its ``bikesense ingest`` process, publishes the same pre-generated frames (10
readings each, the end-to-end benchmark's fleet) as fast as it takes them, and
waits until every reading is stored and every deferred aggregate merged (the
backlog empty). What is measured is the CPU time of the ingest process from
/proc (user + system, every thread) over that span, per reading; and, as a
check that results are unchanged, the end-to-end benchmark's aggregates check
(every reading counted once in every metric, resolution and window size).
Rounds alternate before, after, before, ... so that load from elsewhere on the
machine falls on both.

    .venv/bin/python bench/bench_ingest_cpu.py --before /tmp/base --after . \
        [--readings 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import (
    ROOT_TOPIC,
    aggregates_check,
    cpu_seconds,
    ingest_process,
    make_frames,
    new_database,
    publish_all,
    readings_acked,
    services,
)

from bikesense.services import free_port
from storage.kits import MasterKey, register_kit


def one_round(
    base: str,
    mqtt_url: str,
    source: Path,
    name: str,
    secrets: dict[int, bytes],
    frames: list[tuple[int, bytes]],
    publishers: int,
    inflight: int,
    profile: Path | None = None,
    *,
    backlog: bool = True,
) -> dict[str, object]:
    db = new_database(base, name, source)
    master = MasterKey.generate()
    with psycopg.connect(db, autocommit=True) as conn:
        for kit, secret in secrets.items():
            register_kit(conn, master, kit, secret=secret)
    n = 10 * len(frames)
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="bikesense-ingcpu-", suffix=".log")[1])
    with (
        ingest_process(db, mqtt_url, master, log_path, source, metrics_port=port) as proc,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
        psycopg.connect(db, autocommit=True) as conn,
    ):
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    *("record", "--pid", str(proc.pid), "--nonblocking", "--threads"),
                    *("--rate", "250", "--format", "raw", "--output", str(profile)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if backlog:
            # The frames wait at the broker while ingest is stopped: then it drains them
            # with its queue always full, whatever else the machine is doing meanwhile.
            proc.send_signal(signal.SIGSTOP)
            publish_all(
                mqtt_url, frames, publishers=publishers, inflight=inflight, prefix=ROOT_TOPIC
            )
        cpu0 = cpu_seconds(proc.pid)
        threads0 = thread_cpu(proc.pid)
        started = time.perf_counter()
        if backlog:
            proc.send_signal(signal.SIGCONT)
        else:
            publish_all(
                mqtt_url, frames, publishers=publishers, inflight=inflight, prefix=ROOT_TOPIC
            )
        while readings_acked(http) < n:
            time.sleep(0.05)
        stored_s = time.perf_counter() - started
        while conn.execute("SELECT count(*) FROM aggregate_backlog").fetchone() != (0,):
            time.sleep(0.05)
        cpu = cpu_seconds(proc.pid) - cpu0
        elapsed = time.perf_counter() - started
        threads = {
            tid: seconds - threads0.get(tid, 0.0) for tid, seconds in thread_cpu(proc.pid).items()
        }
        names = thread_names(proc.pid)
        by_name: dict[str, float] = {}
        for tid, seconds in threads.items():
            name = names.get(tid, "other")
            by_name[name] = by_name.get(name, 0.0) + seconds / n * 1e6
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    log_path.unlink(missing_ok=True)
    check = aggregates_check(db)
    return {
        "source": str(source),
        "ingest_cpu_us_per_reading": cpu / n * 1e6,
        "readings_per_s_to_stored": n / stored_s,
        "seconds_to_merged": elapsed,
        "aggregates_check": check,
        "thread_cpu_us_per_reading": by_name,
    }


def thread_names(pid: int) -> dict[str, str]:
    """Python's names of the threads of ``pid``, by thread id (from ``py-spy dump``)."""
    dump = subprocess.run(
        [str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    names = {}
    for tid, name in re.findall(r'^Thread (\d+) .*?"(.+)"$', dump, re.M):
        names[tid] = re.sub(r"-\d+$", "", name).replace("paho-mqtt-client-bench-ingest", "paho")
    return names


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` since it started, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--kits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--backlog",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish every frame while ingest is stopped (SIGSTOP), then let it drain "
        "them (the default); --no-backlog: publish while it runs",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the after checkout's ingest into PATH-<round> (raw format, per thread)",
    )
    args = parser.parse_args()

    secrets = {k: os.urandom(32) for k in range(1, args.kits + 1)}
    frames = make_frames(secrets, args.readings)
    results: dict[str, list[dict[str, object]]] = {"before": [], "after": []}
    with services(None, durable=True) as (cluster, broker, _):
        for i in range(args.rounds):
            for label in ("before", "after") if i % 2 == 0 else ("after", "before"):
                source = (args.before if label == "before" else args.after).resolve()
                r = one_round(
                    cluster.url,
                    broker.url,
                    source,
                    f"ingcpu_{label}_{i}",
                    secrets,
                    frames,
                    args.publishers,
                    args.inflight,
                    None
                    if args.profile is None or label == "before"
                    else args.profile.with_name(f"{args.profile.name}-{i}"),
                    backlog=args.backlog,
                )
                results[label].append(r)
                ag: dict[str, int] = r["aggregates_check"]  # type: ignore[assignment]
                print(
                    f"round {i} {label:6}: ingest {r['ingest_cpu_us_per_reading']:5.2f} "
                    f"µs/reading, {r['readings_per_s_to_stored']:9,.0f} readings/s; "
                    f"aggregates differing {ag.get('metric_window_sums_differing')}"
                    f"/{ag.get('presence_sums_differing')}",
                    flush=True,
                )
                print(
                    "    "
                    + ", ".join(
                        f"{k} {v:.2f}"
                        for k, v in sorted(
                            r["thread_cpu_us_per_reading"].items(),  # type: ignore[union-attr]
                            key=lambda kv: -kv[1],
                        )
                        if v >= 0.05
                    )
                )
    med = {
        label: statistics.median(float(r["ingest_cpu_us_per_reading"]) for r in rs)  # type: ignore[arg-type]
        for label, rs in results.items()
    }
    print(
        f"median ingest CPU per reading: before {med['before']:.2f} µs, after "
        f"{med['after']:.2f} µs; after/before {med['after'] / med['before']:.2f}"
    )
    if args.output is not None:
        args.output.write_text(json.dumps({"rounds": results, "median_us": med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
