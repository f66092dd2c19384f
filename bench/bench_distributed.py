"""The distributed runtime beside the embedded one: same machine, same load, interleaved.

On one throwaway PostgreSQL (durable), one Mosquitto and one single-node Kafka
broker (bikesense/kafka/broker.py), each round runs three contenders one after
the other, every process real and separate:

* **embedded**: ``bikesense ingest`` (MQTT → stream core → PostgreSQL in one process);
* **kafka, 1 worker**: ``bikesense ingest --to kafka`` (MQTT → Kafka) and one
  ``bikesense stream worker`` (Kafka → qa agent → Kafka → store agent → PostgreSQL);
* **kafka, 2 workers**: the same with two workers sharing the partitions.

Each contender gets a fresh database and, for Kafka, its own app id (fresh
topics and consumer group); the rounds alternate the contenders' order. The load
is bench_e2e.py's: frames of 10 readings from a fleet of kits, published at QoS 1
by two publishers as fast as ingest takes them, until every reading is stored
(readings/s, sustained between 10 % and 90 % stored); then a steady paced rate,
the same for every contender, while a prober publishes marker frames one at a
time and polls the API until their rows come back (p50 / p99 publish → visible),
and how far behind the fleet each runtime was when it stopped publishing.
Lost (published - stored) and duplicated (stored - distinct identities) are
counted exactly at the end; CPU time is read from /proc for every process over
the saturated phase and divided by the readings stored.

Progress is followed without a ``count(*)`` every tick (which cost PostgreSQL a
tenth of the machine, bench_e2e.py): inserts from ``pg_stat_user_tables``
(reported within about a second) for the 10 %-90 % figure, and the end by
probing each kit's last frame through the primary key, then one ``count(*)``.

One machine cannot show scale-out: the second worker shares the same two cores
with everything else. This measures what the distributed runtime costs, not
what it gains on more machines.

    .venv/bin/python bench/bench_distributed.py [--readings 100000] [--rounds 2]
        [--paced-rate 1000] [--paced-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import api_server
from bench_e2e import (
    MARKER_KIT,
    PER_FRAME,
    ROOT_TOPIC,
    Prober,
    cpu_seconds,
    frame_readings,
    ingest_backends,
    ingest_process,
    ingest_source,
    machine,
    make_frames,
    new_database,
    publish_all,
    publish_paced,
    rss_peak_kib,
    services,
)

from api.keys import create_key
from api.roles import Role
from bikesense.kafka.broker import KafkaBroker, KafkaDistribution
from firmware_protocol import encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.faust_app.topics import bootstrap_servers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "distributed.json"
#: Kits whose one frame each goes through a freshly started pipeline before measuring,
#: spread over the partitions (the first message also pays for metadata and connections).
WARMUP_KITS = range(9_000_001, 9_000_017)
#: Seconds without a new stored reading before a phase gives up (and counts the rest lost).
STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    #: Faust workers; 0 is the embedded runtime.
    workers: int


CONTENDERS = (
    Contender("embedded", 0),
    Contender("kafka, 1 worker", 1),
    Contender("kafka, 2 workers", 2),
)


# -- the processes -------------------------------------------------------------------------


JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")


def worker_state(log: str) -> tuple[int, bool]:
    """(generation of the last group join, whether the worker said it was ready after it)."""
    joins = list(JOINED.finditer(log))
    if not joins:
        return -1, False
    return int(joins[-1][1]), "Worker ready" in log[joins[-1].end() :]


@contextmanager
def workers_running(count: int, env: dict[str, str], logs: Path) -> Iterator[list[int]]:
    """``count`` ``bikesense stream worker`` processes, each with its own state folder (as on
    machines of their own), once every one has joined the same generation of the group and
    is ready; yields their process ids."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(1, count + 1):
            state = logs / f"worker-{n}-state"
            with (logs / f"worker-{n}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bikesense",
                            "stream",
                            "worker",
                            "--log-level",
                            "INFO",
                        ],
                        env={**env, "BIKESENSE_STATE_DIR": str(state)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
        deadline = time.monotonic() + 120
        while True:
            states = [worker_state(worker_log(logs, n)) for n in range(1, count + 1)]
            if all(ready for _, ready in states) and len({g for g, _ in states}) == 1:
                break
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    "the workers did not become ready: " + worker_log(logs, 1)[-3000:]
                )
            time.sleep(0.2)
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def worker_log(logs: Path, n: int) -> str:
    path = logs / f"worker-{n}.log"
    return path.read_bytes().decode(errors="replace") if path.exists() else ""


def log_findings(log: str, measured_from: int) -> dict[str, Any]:
    """Warnings, errors and group joins (each one a rebalance) in a process's log, while
    starting and while measured (from the byte offset ``measured_from`` on)."""

    def bad(text: str) -> list[str]:
        return [
            line[:300]
            for line in text.splitlines()
            if "[WARNING]" in line
            or "[ERROR]" in line
            or " WARNING " in line
            or " ERROR " in line
            or "Traceback" in line
        ]

    start, measured = log[:measured_from], log[measured_from:]
    return {
        "warnings_or_errors_starting": len(bad(start)),
        "warnings_or_errors_measured": len(bad(measured)),
        "examples": (bad(measured) + bad(start))[:5],
        "group_joins_starting": len(JOINED.findall(start)),
        "group_joins_measured": len(JOINED.findall(measured)),
    }


ASSIGNMENT = re.compile(r"Setting newly assigned partitions\s*\n(.*?) for group", re.S)
ASSIGNED_ROW = re.compile(r"^\| (\S+)\s*\| \{([^}]*)\}", re.M)


def assigned_partitions(log: str, topic: str) -> list[int]:
    """The partitions of ``topic`` in the worker's last assignment (faust logs a table)."""
    blocks = ASSIGNMENT.findall(log)
    for name, spec in ASSIGNED_ROW.findall(blocks[-1] if blocks else ""):
        if name == topic:
            found: list[int] = []
            for part in spec.split(","):
                lo, _, hi = part.strip().partition("-")
                found.extend(range(int(lo), int(hi or lo) + 1))
            return found
    return []


def topic_messages(kafka_url: str, topics: list[str], partitions: int) -> dict[str, list[int]]:
    """Messages in each partition of ``topics`` (their end offsets: nothing is compacted)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]  # noqa: PLC0415

    async def ends() -> dict[str, list[int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url))
        await consumer.start()
        try:
            wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
            found = await consumer.end_offsets(wanted)
        finally:
            await consumer.stop()
        return {t: [int(found[TopicPartition(t, p)]) for p in range(partitions)] for t in topics}

    return asyncio.run(ends())


# -- following the database ----------------------------------------------------------------


def inserted(conn: psycopg.Connection[Any]) -> int:
    """Rows inserted into the raw readings' partitions, from the statistics (a second late)."""
    row = conn.execute(
        "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
        " WHERE relname LIKE 'readings\\_d%%'"
    ).fetchone()
    return int(row[0]) if row else 0


def last_frames_stored(conn: psycopg.Connection[Any], last: dict[int, int], boot: int) -> int:
    """Readings stored of each kit's last frame: primary-key lookups, a millisecond."""
    row = conn.execute(
        "SELECT count(*) FROM readings r JOIN unnest(%s::bigint[], %s::bigint[]) AS l(kit, seq)"
        " ON r.kit_id = l.kit AND r.boot_id = %s AND r.seq = l.seq",
        (list(last), list(last.values()), boot),
    ).fetchone()
    return int(row[0]) if row else 0


def fleet_stored(conn: psycopg.Connection[Any], kits: int, boot: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM readings WHERE kit_id BETWEEN 1 AND %s AND boot_id = %s", (kits, boot)
    ).fetchone()
    return int(row[0]) if row else 0


def wait_stored(
    db: str, frames: list[tuple[int, bytes]], kits: int, boot: int, started: float, baseline: int
) -> list[tuple[float, int]]:
    """Follow the fleet's readings of ``boot`` until every one is stored or nothing moves
    for STALL_S; (seconds since ``started``, stored) samples, the last one exact.

    Cheap checks first, every 0.1 s: the statistics (markers included, a second late);
    past half, the last frames of a tenth of the kits, then of all; only then a
    ``count(*)``, at most twice a second (with workers, the enriched partitions are
    stored side by side, so a kit's last frame is not always its last one stored).
    """
    n = len(frames) * PER_FRAME
    # make_frames numbers each kit's frames from 0.
    last = {kit: count - 1 for kit, count in Counter(k for k, _ in frames).items()}
    some = dict(list(last.items())[::10])
    samples: list[tuple[float, int]] = []
    exact, exact_at = -1, -1.0
    progress, moved_at = (-1, -1), 0.0
    was_complete = False
    with psycopg.connect(db, autocommit=True) as conn:
        while True:
            now = time.perf_counter() - started
            estimate = min(n, inserted(conn) - baseline)
            complete = (
                estimate >= n // 2
                and last_frames_stored(conn, some, boot) == PER_FRAME * len(some)
                and last_frames_stored(conn, last, boot) == PER_FRAME * len(last)
            )
            # Counted at once when the last frames first all show; again twice a second.
            if (complete and not was_complete) or (
                (complete or estimate >= n) and now - exact_at >= 0.5
            ):
                exact, exact_at = fleet_stored(conn, kits, boot), now
                if exact >= n:
                    samples.append((time.perf_counter() - started, exact))
                    return samples
            was_complete = complete
            samples.append((now, estimate))
            if (estimate, exact) != progress:
                progress, moved_at = (estimate, exact), now
            elif now - moved_at > STALL_S:
                samples.append((now, fleet_stored(conn, kits, boot)))
                return samples
            time.sleep(0.1)


def warm_up(db: str, mqtt_url: str, secrets: dict[int, bytes]) -> float:
    """One frame from each warm-up kit, through the whole pipeline; seconds until stored."""
    start_ms = int(time.time() * 1000) - 1_800_000
    rng = np.random.default_rng(3)
    started = time.perf_counter()
    with MqttPublisher(mqtt_url, topic_root=ROOT_TOPIC, client_id="bench-warm-up") as pub:
        for kit, secret in secrets.items():
            frame = encode_readings(kit, 1, 0, frame_readings(kit, 0, start_ms, rng), secret)
            pub.publish(f"{ROOT_TOPIC}/kits/{kit}/up", frame)
    deadline = time.monotonic() + 120
    with psycopg.connect(db, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE kit_id BETWEEN %s AND %s",
                (min(secrets), max(secrets)),
            ).fetchone()
            if row and row[0] >= PER_FRAME * len(secrets):
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up frames were not stored in 120 s ({row})")
            time.sleep(0.05)


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process (PostgreSQL with its backends, ended or alive)."""
    return {name: cpu_seconds(pid, children=name == "postgresql") for name, pid in pids.items()}


def machine_cpu_s() -> tuple[float, float]:
    """(busy, stolen by the hypervisor) CPU seconds of the whole machine since it booted."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


# -- one contender -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rig:
    base_url: str
    mqtt_url: str
    kafka: KafkaBroker
    pids: dict[str, int]  # the services' processes: postgresql, mosquitto, kafka
    partitions: int
    work: Path


def run_contender(
    rig: Rig,
    contender: Contender,
    run_id: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    db = new_database(rig.base_url, "bench_distributed")
    master = MasterKey.generate()
    with psycopg.connect(db, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in range(1, args.kits + 1)}
        marker_secret = register_kit(conn, master, MARKER_KIT).secret
        warmup_secrets = {k: register_kit(conn, master, k).secret for k in WARMUP_KITS}
        api_key = create_key(conn, Role.ADMIN, "bench-distributed").token
    frames = make_frames(secrets, args.readings)
    paced_frames = make_frames(secrets, int(args.paced_rate * args.paced_seconds), boot=2)
    n = len(frames) * PER_FRAME
    logs = rig.work / run_id
    logs.mkdir(parents=True)
    app_id = f"bench-{run_id}"
    topics = [f"{app_id}.readings", f"{app_id}.enriched"] if contender.workers else []
    kafka_env = {
        "BIKESENSE_DATABASE_URL": db,
        "BIKESENSE_KAFKA_URL": rig.kafka.url,
        "BIKESENSE_KAFKA_APP_ID": app_id,
        "BIKESENSE_KAFKA_PARTITIONS": str(rig.partitions),
    }
    print(
        f"--- {contender.name} ({run_id}): {n:,} readings, then {args.paced_rate:,.0f} "
        f"readings/s for {args.paced_seconds:.0f} s",
        flush=True,
    )
    with ExitStack() as stack:
        started_at = time.perf_counter()
        worker_pids: list[int] = []
        if contender.workers:
            worker_pids = stack.enter_context(
                workers_running(contender.workers, {**os.environ, **kafka_env}, logs)
            )
        workers_ready_s = time.perf_counter() - started_at
        api_url, api_pid = stack.enter_context(api_server(db))
        ingest = stack.enter_context(
            ingest_process(
                db,
                rig.mqtt_url,
                master,
                logs / "ingest.log",
                options=["--to", "kafka"] if contender.workers else [],
                env=kafka_env if contender.workers else None,
            )
        )
        warm_up_s = warm_up(db, rig.mqtt_url, warmup_secrets)
        time.sleep(1.5)  # the warm-up's inserts reach the statistics
        log_sizes = {path.name: path.stat().st_size for path in logs.glob("*.log")}
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM rejected_frames")  # ingest_process's probe
            baseline = inserted(conn)
        pids = {
            "ingest": ingest.pid,
            **{f"worker {i}": pid for i, pid in enumerate(worker_pids, 1)},
            **rig.pids,
            "api server": api_pid,
        }
        pids["publishers and bench"] = os.getpid()
        cpu0 = cpu_snapshot(pids)
        machine0 = machine_cpu_s()
        sessions0 = {pid: cpu_seconds(pid) for pid in ingest_backends(db)}
        load0 = os.getloadavg()

        # Saturated: as fast as ingest takes the frames, until every reading is stored.
        prober = Prober(rig.mqtt_url, api_url, api_key, marker_secret, poll_s=0.1)
        taken: list[float] = []

        def publish() -> None:
            publish_all(rig.mqtt_url, frames, publishers=args.publishers, inflight=args.inflight)
            taken.append(time.perf_counter() - started)

        started = time.perf_counter()
        publisher = threading.Thread(target=publish)
        publisher.start()
        prober.start()
        samples = wait_stored(db, frames, args.kits, 1, started, baseline)
        elapsed, stored_fleet = samples[-1]
        cpu = {name: s - cpu0[name] for name, s in cpu_snapshot(pids).items()}
        machine1 = machine_cpu_s()
        # Whatever else ran on the machine meanwhile (other people's work), and the
        # hypervisor's share: what makes one run unlike the next.
        others = {
            "other work on the machine": machine1[0] - machine0[0] - sum(cpu.values()),
            "stolen by the hypervisor": machine1[1] - machine0[1],
        }
        sessions_cpu = 0.0
        for pid in set(sessions0) | set(ingest_backends(db)):
            with suppress(FileNotFoundError):
                sessions_cpu += cpu_seconds(pid) - sessions0.get(pid, 0.0)
        publisher.join()
        prober.stop.set()
        prober.join(60)
        saturated_topics = topic_messages(rig.kafka.url, topics, rig.partitions) if topics else None

        # Paced: the same steady rate for every contender, below each one's capacity.
        paced_prober = Prober(rig.mqtt_url, api_url, api_key, marker_secret, first_seq=10**6)
        paced_prober.start()
        with psycopg.connect(db, autocommit=True) as conn:
            paced_baseline = inserted(conn)
        paced_started = time.perf_counter()
        paced_cpu0, paced_machine0 = cpu_snapshot(pids), machine_cpu_s()
        publish_paced(rig.mqtt_url, paced_frames, args.paced_rate / PER_FRAME)
        paced_publish_s = time.perf_counter() - paced_started
        paced_samples = wait_stored(db, paced_frames, args.kits, 2, paced_started, paced_baseline)
        paced_elapsed = time.perf_counter() - paced_started
        paced_cpu = {name: s - paced_cpu0[name] for name, s in cpu_snapshot(pids).items()}
        paced_others = (
            machine_cpu_s()[0] - paced_machine0[0] - sum(paced_cpu.values())
        ) / paced_elapsed
        paced_prober.stop.set()
        paced_prober.join(60)
        time.sleep(2)  # anything late or redelivered would show now
        with psycopg.connect(db, autocommit=True) as conn:
            total, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
            ).fetchone()  # type: ignore[misc]
        rss = {
            name: rss_peak_kib(pid) / 1024
            for name, pid in pids.items()
            if name in {"ingest", "kafka"} or name.startswith("worker")
        }
        paced_published = (len(paced_frames) + paced_prober.published) * PER_FRAME
        load1 = os.getloadavg()
    kafka_topics = topic_messages(rig.kafka.url, topics, rig.partitions) if topics else None
    published = (
        n
        + len(paced_frames) * PER_FRAME
        + PER_FRAME * len(WARMUP_KITS)
        + (prober.published + paced_prober.published) * PER_FRAME
    )
    logs_found = {
        "ingest": log_findings(
            (logs / "ingest.log").read_text(errors="replace"), log_sizes["ingest.log"]
        )
    }
    assignment: dict[str, dict[str, list[int]]] = {}
    for i in range(1, contender.workers + 1):
        text = worker_log(logs, i)
        logs_found[f"worker {i}"] = log_findings(text, log_sizes[f"worker-{i}.log"])
        assignment[f"worker {i}"] = {
            kind: assigned_partitions(text, f"{app_id}.{kind}") for kind in ("readings", "enriched")
        }
    # What each worker had to do, by the messages in the partitions it was assigned last.
    shares = (
        {
            worker: {
                kind: sum(kafka_topics[f"{app_id}.{kind}"][p] for p in parts)
                / max(1, sum(kafka_topics[f"{app_id}.{kind}"]))
                for kind, parts in topics.items()
            }
            for worker, topics in assignment.items()
        }
        if kafka_topics
        else None
    )
    # A warning, an error or a rebalance while measuring: keep the logs to read.
    anomalous = any(
        f["warnings_or_errors_measured"] or f["group_joins_measured"] for f in logs_found.values()
    )
    kept = None
    if anomalous and not args.keep_logs:
        kept = Path(tempfile.mkdtemp(prefix=f"bikesense-bench-distributed-{run_id}-"))
        shutil.copytree(logs, kept, dirs_exist_ok=True)
        print(f"  warnings or a rebalance while measuring: logs kept in {kept}", flush=True)
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)

    def at(fraction: float) -> tuple[float, int]:
        return next((s for s in samples if s[1] >= fraction * n), samples[-1])

    t10, c10 = at(0.1)
    t90, c90 = at(0.9)
    lat, paced_lat = prober.latencies_s, paced_prober.latencies_s
    return {
        "contender": contender.name,
        "workers": contender.workers,
        "run": run_id,
        "kafka_app_id": app_id if contender.workers else None,
        "readings": n,
        "frames": len(frames),
        "kits": args.kits,
        "seconds": elapsed,
        "stored_in_saturated_phase": stored_fleet,
        "readings_per_s": stored_fleet / elapsed,
        # None when the run was too short for the statistics to tell 10 % from 90 %.
        "readings_per_s_sustained_10_to_90pct": (c90 - c10) / (t90 - t10) if t90 > t10 else None,
        # Ingest acknowledges a frame over MQTT once it is in Kafka: with workers, this is
        # how fast ingest takes readings into Kafka, not how fast they are stored.
        "readings_per_s_taken_by_ingest": n / taken[0] if taken else None,
        "cpu_s": cpu,
        "cpu_us_per_reading": {name: s / n * 1e6 for name, s in cpu.items()},
        "cpu_us_per_reading_total": sum(cpu.values()) / n * 1e6,
        "cpu_cores_busy": {name: s / elapsed for name, s in cpu.items()},
        "machine_cores_busy_besides": {name: s / elapsed for name, s in others.items()},
        "paced_cpu_cores_busy": {name: s / paced_elapsed for name, s in paced_cpu.items()},
        "paced_machine_cores_busy_besides": paced_others,
        "postgres_runtime_sessions_cpu_us_per_reading": sessions_cpu / n * 1e6,
        "peak_rss_mib": rss,
        "latency_samples": len(lat),
        "latency_timeouts": prober.timeouts,
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_p99_s": percentile(lat, 0.99),
        "paced_readings_per_s": args.paced_rate,
        "paced_seconds_to_store_all": paced_samples[-1][0],
        # How far behind the fleet the runtime was when the fleet stopped: more than a
        # fraction of a second, and the paced rate was more than it could take.
        "paced_behind_at_end_s": paced_samples[-1][0] - paced_publish_s,
        # The fleet's readings over the time to store them all: the paced rate when the
        # runtime kept up, what it could take from a steady fleet when it did not.
        "paced_readings_per_s_stored": paced_samples[-1][1] / paced_samples[-1][0],
        "paced_stored": paced_samples[-1][1],
        "paced_latencies_s": paced_lat,
        "paced_latency_samples": len(paced_lat),
        "paced_latency_timeouts": paced_prober.timeouts,
        "paced_latency_p50_s": statistics.median(paced_lat) if paced_lat else None,
        "paced_latency_p99_s": percentile(paced_lat, 0.99),
        "paced_latency_max_s": max(paced_lat) if paced_lat else None,
        "published_readings": published,
        "stored_readings": int(total),
        "lost": published - int(total),
        "duplicated": int(total) - int(distinct),
        "kafka_messages_per_partition": kafka_topics,
        # Each reading crosses both topics once (markers and the warm-up included). Ingest
        # sends one message per kit per batch it took from MQTT: how many readings that is
        # depends on how the frames arrive (a burst or a steady fleet).
        "kafka_readings_per_message": {
            topic.rpartition(".")[2]: (published - paced_published) / max(1, sum(counts))
            for topic, counts in saturated_topics.items()
        }
        if saturated_topics
        else None,
        # CPU per message ingest produced in the saturated phase (a qa event, the enriched
        # messages it forwards, a changelog entry, their share of the store's batches): the
        # runtime's cost follows messages more than readings.
        "cpu_ms_per_readings_message": {
            name: s * 1e3 / max(1, sum(saturated_topics[f"{app_id}.readings"]))
            for name, s in cpu.items()
        }
        if saturated_topics
        else None,
        "paced_kafka_readings_per_message": {
            topic.rpartition(".")[2]: paced_published
            / max(1, sum(counts) - sum(saturated_topics[topic]))
            for topic, counts in kafka_topics.items()
        }
        if kafka_topics and saturated_topics
        else None,
        "worker_partitions": assignment or None,
        "worker_share_of_messages": shares,
        "workers_ready_s": workers_ready_s if contender.workers else None,
        "warm_up_s": warm_up_s,
        "logs": logs_found,
        "logs_kept_in": str(kept or logs) if kept or args.keep_logs else None,
        "load_average_before": load0,
        "load_average_after": load1,
    }


# -- the report ----------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender: medians of the rounds, latencies pooled, losses summed."""
    out: dict[str, dict[str, Any]] = {}
    for contender in CONTENDERS:
        mine = [r for r in runs if r["contender"] == contender.name]
        if not mine:
            continue
        paced = [s for r in mine for s in r["paced_latencies_s"]]
        processes = sorted({p for r in mine for p in r["cpu_us_per_reading"]})
        out[contender.name] = {
            "runs": len(mine),
            "readings_per_s": statistics.median(r["readings_per_s"] for r in mine),
            "readings_per_s_each_run": [r["readings_per_s"] for r in mine],
            "readings_per_s_sustained_10_to_90pct": statistics.median(
                r["readings_per_s_sustained_10_to_90pct"] or float("nan") for r in mine
            ),
            "readings_per_s_taken_by_ingest": statistics.median(
                r["readings_per_s_taken_by_ingest"] for r in mine
            ),
            "paced_readings_per_s": mine[0]["paced_readings_per_s"],
            "paced_latency_samples": len(paced),
            "paced_latency_p50_s": statistics.median(paced) if paced else None,
            "paced_latency_p99_s": percentile(paced, 0.99),
            "paced_latency_max_s": max(paced) if paced else None,
            "paced_behind_at_end_s_max": max(r["paced_behind_at_end_s"] for r in mine),
            "paced_readings_per_s_stored": statistics.median(
                r["paced_readings_per_s_stored"] for r in mine
            ),
            "published_readings": sum(r["published_readings"] for r in mine),
            "lost": sum(r["lost"] for r in mine),
            "duplicated": sum(r["duplicated"] for r in mine),
            "cpu_us_per_reading": {
                p: statistics.median(r["cpu_us_per_reading"].get(p, 0.0) for r in mine)
                for p in processes
            },
            "cpu_us_per_reading_total": statistics.median(
                r["cpu_us_per_reading_total"] for r in mine
            ),
            # PostgreSQL's sessions of the runtime only: the writes, not the prober's polls
            # (which cost the same per second, so more per reading in a slower run).
            "postgres_runtime_sessions_cpu_us_per_reading": statistics.median(
                r["postgres_runtime_sessions_cpu_us_per_reading"] for r in mine
            ),
            "cpu_cores_busy": {
                p: statistics.median(r["cpu_cores_busy"].get(p, 0.0) for r in mine)
                for p in processes
            },
            "machine_cores_busy_besides_max": max(
                r["machine_cores_busy_besides"]["other work on the machine"] for r in mine
            ),
            "kafka_readings_per_message": {
                kind: statistics.median(r["kafka_readings_per_message"][kind] for r in mine)
                for kind in ("readings", "enriched")
            }
            if contender.workers
            else None,
            "cpu_ms_per_readings_message": {
                p: statistics.median(r["cpu_ms_per_readings_message"].get(p, 0.0) for r in mine)
                for p in processes
            }
            if contender.workers
            else None,
            "paced_kafka_readings_per_message": {
                kind: statistics.median(r["paced_kafka_readings_per_message"][kind] for r in mine)
                for kind in ("readings", "enriched")
            }
            if contender.workers
            else None,
            "paced_cpu_cores_busy": {
                p: statistics.median(r["paced_cpu_cores_busy"].get(p, 0.0) for r in mine)
                for p in processes
            },
            "warnings_or_errors_while_measured": sum(
                f["warnings_or_errors_measured"] for r in mine for f in r["logs"].values()
            ),
            "group_joins_while_measured": sum(
                f["group_joins_measured"] for r in mine for f in r["logs"].values()
            ),
        }
    return out


@contextmanager
def kafka_broker(work: Path, heap_mb: int) -> Iterator[KafkaBroker]:
    cache = Path(os.environ.get("BIKESENSE_KAFKA_CACHE_DIR") or ROOT / ".state" / "kafka-dist")
    broker = KafkaBroker(work / "kafka", KafkaDistribution(cache), heap_mb=heap_mb)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def java_version() -> str:
    done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return done.stderr.splitlines()[0] if done.stderr else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readings",
        type=int,
        default=100_000,
        help="readings of the saturated phase, per contender and round",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="each contender runs once a round; the order alternates",
    )
    parser.add_argument("--kits", type=int, default=200)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=1000.0,
        help="readings/s of the paced phase, the same for every contender",
    )
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument(
        "--warm-up-readings",
        type=int,
        default=20_000,
        help="an unmeasured run of the Kafka runtime first (0: none)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=8,
        help="BIKESENSE_KAFKA_PARTITIONS of the Kafka contenders",
    )
    parser.add_argument("--kafka-heap-mb", type=int, default=512)
    parser.add_argument(
        "--only", nargs="*", choices=[c.name for c in CONTENDERS], help="run only these contenders"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the processes' logs (their folder is printed)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = [c for c in CONTENDERS if not args.only or c.name in args.only]

    work = Path(tempfile.mkdtemp(prefix="bikesense-bench-distributed-"))
    runs: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    try:
        with (
            services(None, durable=True) as (cluster, broker, broker_pid),
            kafka_broker(work, args.kafka_heap_mb) as kafka,
        ):
            about = {
                **machine(cluster.url),
                "kafka": kafka.distribution.version,
                "java": java_version(),
            }
            rig = Rig(
                cluster.url,
                broker.url,
                kafka,
                {"postgresql": cluster.pid(), "mosquitto": broker_pid, "kafka": kafka.pid},
                args.partitions,
                work,
            )
            if args.warm_up_readings:
                # Not measured: the broker's JVM compiles its hot paths, PostgreSQL and the
                # page cache warm up, and the first contender does not pay for them.
                warm = argparse.Namespace(
                    **{**vars(args), "readings": args.warm_up_readings, "paced_seconds": 3.0}
                )
                run_contender(rig, CONTENDERS[1], "warm-up", warm)
            for round_no in range(1, args.rounds + 1):
                order = chosen if round_no % 2 else chosen[::-1]
                for contender in order:
                    run_id = f"r{round_no}-{contender.workers}w"
                    runs.append(run_contender(rig, contender, run_id, args))
                    time.sleep(1)
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")
    summary = summarise(runs)
    doc = {
        "benchmark": "distributed",
        "when": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        # The code every process ran, and whether the checkout had uncommitted changes.
        "code": ingest_source(ROOT),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "what": (
            "MQTT → runtime → PostgreSQL (durable), every process separate: the embedded "
            "runtime against ingest --to kafka with one and two faust workers, same "
            "machine, same load, contenders interleaved; CPU per stored reading over the "
            "saturated phase; latency: 10-reading marker frame published → rows returned "
            "by GET /v1/exports/readings, paced phase, polled every 5 ms"
        ),
        "summary": summary,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")

    print(
        f"\n{about['cpu_model']}, {about['cores']} cores; Kafka {about['kafka']}; load "
        f"{runs[0]['load_average_before']} → {runs[-1]['load_average_after']}\n"
    )
    print(
        f"{'contender':<18} {'readings/s':>11} {'sustained':>10} {'p50 s':>7} {'p99 s':>7} "
        f"{'lost':>5} {'dup':>4} {'µs CPU/reading':>15}"
    )
    for name, s in summary.items():
        print(
            f"{name:<18} {s['readings_per_s']:>11,.0f} "
            f"{s['readings_per_s_sustained_10_to_90pct']:>10,.0f} "
            f"{s['paced_latency_p50_s'] or float('nan'):>7.3f} "
            f"{s['paced_latency_p99_s'] or float('nan'):>7.3f} {s['lost']:>5} "
            f"{s['duplicated']:>4} {s['cpu_us_per_reading_total']:>15.0f}"
        )
    print("\nCPU per stored reading by process, µs (median of the rounds):")
    for name, s in summary.items():
        print(
            f"  {name:<18} "
            + ", ".join(f"{p} {us:.1f}" for p, us in s["cpu_us_per_reading"].items())
        )
    for r in runs:
        besides = r["machine_cores_busy_besides"]
        if r["kafka_readings_per_message"]:
            per_message = r["cpu_ms_per_readings_message"]
            workers_ms = sum(v for k, v in per_message.items() if k.startswith("worker"))
            print(
                f"  {r['run']}: {r['kafka_readings_per_message']['readings']:.1f} readings per "
                f"Kafka message (paced phase "
                f"{r['paced_kafka_readings_per_message']['readings']:.1f}); per message: "
                f"workers {workers_ms:.2f} ms, Kafka {per_message['kafka']:.2f} ms of CPU"
            )
        print(
            f"  {r['run']} {r['contender']}: {r['readings_per_s']:,.0f} readings/s, paced p99 "
            f"{r['paced_latency_p99_s'] or float('nan'):.3f} s, "
            f"{r['paced_behind_at_end_s']:.1f} s behind the fleet at its end; other work "
            "on the machine "
            f"{besides['other work on the machine']:.2f} cores (paced phase "
            f"{r['paced_machine_cores_busy_besides']:.2f}), stolen "
            f"{besides['stolen by the hypervisor']:.2f}"
        )
        for process, found in r["logs"].items():
            for line in found["examples"]:
                print(f"  {r['run']} {process}: {line[:200]}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
