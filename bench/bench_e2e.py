"""End to end: kit frames over MQTT to readings visible through the API, side by side in one run.

On one throwaway PostgreSQL (durable settings: fsync and synchronous commit on,
as deployed) and one Mosquitto (bikesense's own configuration), in this order:

1. **the pipeline**: pre-generated frames of 10 readings each (generation is
   outside the measurement) published at QoS 1 by two paho publishers as fast
   as the pipeline takes them, to ``bikesense ingest`` running as a separate
   process (the embedded runtime, as deployed), until every reading is stored.
   Readings/s overall and sustained (between 10 % and 90 % stored), lost
   (published - stored) and duplicated (stored - distinct identities).
   Meanwhile a prober publishes marker frames from a kit of their own, one at a
   time, and polls ``GET /v1/exports/readings?kit=<marker>`` on an API server
   process until the frame's 10 rows come back: latency from publish to visible
   through the API. Then, below saturation, frames are published at a steady
   half of the rate just measured (``--paced-fraction``) for 20 s while the
   prober measures again: the latency a fleet that the pipeline keeps up with
   sees (the saturated figure is mostly time spent queued).
2. **the bare COPY**: a binary COPY of the same enriched rows (decoded and run
   through the stream core beforehand) into ``readings`` of a fresh database on
   the same server, in batches of 10,000, one transaction each. Nothing else
   runs: no MQTT, no publishers, no decoding.
3. **the minimal pipeline**, the ceiling on this rig: the same frames from the
   same publishers over the same broker to a subscriber that does nothing but
   receive (paho 3.1.1, QoS 1, manual acks, into a bounded queue), decode
   (``decode_readings_many``, up to 2,000 messages at a time), binary-COPY the
   raw reading columns into ``readings`` of a fresh database and ack after the
   commit: no stream core, no aggregates, no de-duplication. Readings/s, lost,
   duplicated and CPU per reading of each process (publishers, subscriber,
   Mosquitto, PostgreSQL).
4. **the naive way**: a paho ``on_message`` callback that decodes each frame and
   runs one INSERT per reading in autocommit, for a bounded time on a subset.

Prints a table and writes ``bench/results/e2e.json``.

    .venv/bin/python bench/bench_e2e.py [--readings 300000] [--naive-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import api_server

from api.keys import create_key
from api.roles import Role
from bikesense.services import MosquittoBroker, PostgresCluster, free_port
from firmware_protocol import (
    READING_DTYPE,
    decode_readings,
    decode_readings_many,
    empty_readings,
    encode_readings,
    peek_header,
)
from ingest.mqtt import InboundMessage, MqttSubscriber
from simulators.publisher import MqttPublisher
from storage import copybin
from storage.kits import MasterKey, register_kit
from storage.readings import READING_COLUMNS, TABLE_COLUMNS, as_written, enriched_from_rows
from storage.writer import ensure_partitions
from stream.core.batch import ENRICHED_DTYPE
from stream.core.process import CoreConfig, aggregate_new_rows, process_batch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "e2e.json"
PER_FRAME = 10
MARKER_KIT = 9_999_999
ROOT_TOPIC = "bench/bikesense/v1"
NAIVE_TOPIC = "bench-naive/bikesense/v1"
MINIMAL_TOPIC = "bench-minimal/bikesense/v1"
#: docs/design.md, "Quality bars", on 2 cores.
TARGETS = {
    "readings_per_s": 20_000,
    "ratio_to_bare_copy": 0.5,
    "ratio_to_minimal": 0.5,  # not in docs/design.md: the bar issue 28 set
    "ratio_to_naive": 20.0,
    "p99_latency_s": 1.0,
}


# -- the machine ---------------------------------------------------------------------------


def machine(pg_url: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    with psycopg.connect(pg_url) as conn:
        pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    mosquitto = subprocess.run(
        ["mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "postgresql": pg_version,
        "mosquitto": mosquitto[0] if mosquitto else "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- services and databases -----------------------------------------------------------------


class TunedBroker(MosquittoBroker):
    """bikesense's broker with another ``max_inflight_messages``, to measure that setting."""

    def __init__(self, directory: Path, max_inflight: int) -> None:
        super().__init__(directory)
        self.max_inflight = max_inflight

    def config_text(self) -> str:
        text, replaced = re.subn(
            r"(?m)^max_inflight_messages \d+$",
            f"max_inflight_messages {self.max_inflight}",
            super().config_text(),
        )
        assert replaced == 1, "bikesense's broker config sets max_inflight_messages once"
        return text


def broker_max_inflight(broker: MosquittoBroker) -> int:
    found = re.search(r"(?m)^max_inflight_messages (\d+)$", broker.config_text())
    assert found, "bikesense's broker config sets max_inflight_messages"
    return int(found.group(1))


@contextmanager
def services(
    broker_inflight: int | None, durable: bool
) -> Iterator[tuple[PostgresCluster, MosquittoBroker, int]]:
    """PostgreSQL and Mosquitto on loopback; yields them and the broker's process id."""
    root = Path(tempfile.mkdtemp(prefix="bikesense-bench-e2e-"))
    root.chmod(0o755)
    cluster = PostgresCluster(root / "postgres", durable=durable)
    broker = (
        MosquittoBroker(root / "mosquitto")
        if broker_inflight is None
        else TunedBroker(root / "mosquitto", broker_inflight)
    )
    cluster.start()
    try:
        broker_pid = broker.start().pid
        try:
            yield cluster, broker, broker_pid
        finally:
            broker.stop()
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def new_database(base: str, name: str, source: Path = ROOT) -> str:
    """A fresh database migrated by the code in ``source`` (``bikesense db migrate``), so an
    earlier checkout given as the ingest source writes to the schema it knows."""
    with psycopg.connect(base, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    url = f"{base.rpartition('/')[0]}/{name}"
    today = int(time.time() // 86_400)
    subprocess.run(
        [sys.executable, "-m", "bikesense", "db", "migrate", "--backend", "plain"],
        env={**os.environ, "BIKESENSE_DATABASE_URL": url, "PYTHONPATH": str(source)},
        cwd=source,
        check=True,
        capture_output=True,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_partitions(conn, [today - 1, today, today + 1])
    return url


def ingest_backends(db: str) -> list[int]:
    """Process ids of ingest's PostgreSQL sessions (application name bikesense-stream*)."""
    with psycopg.connect(db, autocommit=True) as conn:
        return [
            int(pid)
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'bikesense-stream%'"
            )
        ]


def partial_rows_merged(db: str) -> int:
    """Rows inserted or updated where partials are stored: ``cell_windows`` (one row per
    cell-window), or ``window_partials`` (one per metric too) in checkouts before it."""
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sum(n_tup_ins + n_tup_upd) FROM pg_stat_user_tables"
            " WHERE relname IN ('cell_windows', 'window_partials')"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def aggregates_check(db: str) -> dict[str, Any]:
    """Whether the aggregates hold every stored reading once, after ingest stopped: per
    metric, resolution and window size, the readings counted in ``cell_windows`` and in
    ``window_presence`` against the stream core's aggregation of every stored reading at
    once (default resolutions and windows, as the benchmark's ingest runs). A batch whose
    aggregates were lost or merged twice shows as a difference; so do backlog rows left."""
    columns = sql.SQL(", ").join(as_written(c) for c in TABLE_COLUMNS)
    with psycopg.connect(db, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY (SELECT {} FROM readings r) TO STDOUT (FORMAT BINARY)").format(
                    columns
                )
            ) as copy,
        ):
            payload = b"".join(bytes(block) for block in copy)
        stored_n = {
            (int(m), int(r), int(w)): int(n)
            for m, r, w, n in conn.execute(
                "SELECT metric, resolution, window_s, sum(n) FROM window_partials GROUP BY 1, 2, 3"
            )
        }
        stored_presence = {
            (int(r), int(w)): int(n or 0)
            for r, w, n in conn.execute(
                "SELECT resolution, window_s, sum(readings) FROM window_presence GROUP BY 1, 2"
            )
        }
        # Checkouts before migration 0115 have no backlog.
        backlog = (0,)
        if conn.execute("SELECT to_regclass('aggregate_backlog')").fetchone() != (None,):
            backlog = conn.execute("SELECT count(*) FROM aggregate_backlog").fetchone()
    rows = enriched_from_rows(
        copybin.decode_rows(TABLE_COLUMNS, payload[len(copybin.HEADER) : -len(copybin.TRAILER)])
    )
    partials, presence = aggregate_new_rows(rows, CoreConfig())
    expected_n: dict[tuple[int, int, int], int] = {}
    for m, r, w, n in zip(
        partials["metric"].tolist(),
        partials["resolution"].tolist(),
        partials["window_s"].tolist(),
        partials["n"].tolist(),
        strict=True,
    ):
        expected_n[(m, r, w)] = expected_n.get((m, r, w), 0) + n
    expected_presence: dict[tuple[int, int], int] = {}
    for r, w, n in zip(
        presence["resolution"].tolist(),
        presence["window_s"].tolist(),
        presence["readings"].tolist(),
        strict=True,
    ):
        expected_presence[(r, w)] = expected_presence.get((r, w), 0) + n
    keys = set(stored_n) | set(expected_n)
    pkeys = set(stored_presence) | set(expected_presence)
    return {
        "readings_aggregated": len(rows),
        "metric_window_sums_differing": sum(
            stored_n.get(k, 0) != expected_n.get(k, 0) for k in keys
        ),
        "metric_window_sums": len(keys),
        "presence_sums_differing": sum(
            stored_presence.get(k, 0) != expected_presence.get(k, 0) for k in pkeys
        ),
        "backlog_rows_left": int(backlog[0]) if backlog else 0,
    }


def count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]


# -- the frames -----------------------------------------------------------------------------


def frame_readings(kit: int, seq: int, start_ms: int, rng: np.random.Generator) -> np.ndarray:
    r = empty_readings(PER_FRAME)
    step = seq * PER_FRAME + np.arange(PER_FRAME)
    r["ts_ms"] = start_ms + step * 1000
    r["lat_deg"] = 52.06 + (kit % 40) * 2e-3 + step * 3.6e-5 % 0.05
    r["lon_deg"] = 5.06 + (kit // 40 % 40) * 3e-3 + step * 1e-5 % 0.05
    r["gnss_fix"], r["hdop"], r["satellites"], r["speed_mps"] = 2, 0.9, 9, 4.0
    r["pm1_ugm3"] = rng.gamma(2.0, 3.0, PER_FRAME)
    r["pm25_ugm3"] = rng.gamma(2.0, 5.0, PER_FRAME)
    r["pm10_ugm3"] = rng.gamma(2.0, 8.0, PER_FRAME)
    r["no2_ugm3"] = rng.gamma(3.0, 9.0, PER_FRAME)
    r["noise_laeq_db"] = rng.normal(66.0, 7.0, PER_FRAME)
    r["noise_lamax_db"] = r["noise_laeq_db"] + 6.0
    r["interval_ms"] = 1000
    r["temperature_c"], r["humidity_pct"] = 11.0, 70.0
    return r


def make_frames(
    secrets: dict[int, bytes], n_readings: int, boot: int = 1
) -> list[tuple[int, bytes]]:
    """Frames of 10 readings, round-robin over the kits, every reading in the last hours."""
    kits = sorted(secrets)
    frames_total = -(-n_readings // PER_FRAME)
    per_kit = -(-frames_total // len(kits))
    start_ms = int(time.time() * 1000) - (per_kit * PER_FRAME + 600) * 1000
    rng = np.random.default_rng(7)
    out: list[tuple[int, bytes]] = []
    for seq in range(per_kit):
        for kit in kits:
            if len(out) == frames_total:
                return out
            readings = frame_readings(kit, seq, start_ms, rng)
            out.append((kit, encode_readings(kit, boot, seq, readings, secrets[kit])))
    return out


@dataclass(frozen=True, slots=True)
class Fleet:
    """The frames the pipeline was fed and its kits' secrets: the minimal pipeline gets
    the same."""

    frames: list[tuple[int, bytes]]
    secrets: dict[int, bytes]


def enriched_rows(frames: list[tuple[int, bytes]], secrets: dict[int, bytes]) -> np.ndarray:
    """The rows the pipeline stores for ``frames``: decoded and run through the stream core."""
    readings = np.concatenate(
        [decode_readings(payload, secrets[kit]).readings for kit, payload in frames]
    )
    now = int(time.time() * 1000)
    enriched = process_batch(readings, now, {}, CoreConfig()).enriched
    enriched["received_ms"] = now
    return enriched


# -- 1. the pipeline ------------------------------------------------------------------------


@contextmanager
def ingest_process(
    db_url: str,
    mqtt_url: str,
    master: MasterKey,
    log_path: Path,
    source: Path = ROOT,
    log_level: str = "WARNING",
    options: Sequence[str] = (),
    metrics_port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``bikesense ingest`` as its own process, running the code in ``source``, serving
    its metrics on ``metrics_port`` if given, with ``env`` added to its environment
    (``BIKESENSE_KAFKA_URL`` and the like for ``--to kafka``).

    ``python -m`` puts the working directory first on the import path, ahead of the
    environment's editable install: another checkout (an earlier commit) runs as is.
    """
    env = {
        **os.environ,
        "BIKESENSE_DATABASE_URL": db_url,
        "BIKESENSE_MQTT_URL": mqtt_url,
        "BIKESENSE_KIT_MASTER_KEY": master.to_text(),
        "PYTHONPATH": str(source),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bikesense",
                "ingest",
                "--client-id",
                "bench-ingest",
                "--topic-root",
                ROOT_TOPIC,
                "--log-level",
                log_level,
                *(["--metrics-port", str(metrics_port)] if metrics_port is not None else []),
                *options,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=source,
        )
    try:
        deadline = time.monotonic() + 60
        # Subscribed once its persistent session exists on the broker: wait for the
        # consumer to report, via a throwaway frame from an unknown kit (a reject).
        with psycopg.connect(db_url, autocommit=True) as conn:
            probe = MqttPublisher(mqtt_url, topic_root=ROOT_TOPIC)
            probe.connect()
            while True:
                probe.publish(f"{ROOT_TOPIC}/kits/1/up", b"warm-up")
                probe.flush()
                time.sleep(0.3)
                rejected = conn.execute("SELECT count(*) FROM rejected_frames").fetchone()
                if rejected and rejected[0] > 0:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ingest did not start: {log_path.read_text()[-3000:]}")
            probe.close()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time of a process (and, with ``children``, of its children, ended or alive)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                with suppress(FileNotFoundError, ProcessLookupError):
                    ticks += round(cpu_seconds(int(child)) * os.sysconf("SC_CLK_TCK"))
    return ticks / os.sysconf("SC_CLK_TCK")


#: The ingest threads whose time is shared out, by the loop function at the root of their
#: stacks: the serial worker of the runtime before the stages overlapped, and the two stages.
PROFILE_THREADS = {
    "_work_once": "worker",
    "_prepare_loop": "prepare stage",
    "_write_loop": "write stage",
}

#: Where a thread's time goes: the innermost of these functions on its stack.
PROFILE_BUCKETS = {
    "_collect": "waiting for messages (queue empty, or lingering for more)",
    "_wait_for_room": "waiting for room in the next batch (the write stage is behind)",
    "_take_next": "waiting for the next batch",
    "joined": "joining a batch's chunks (merging their partials, CPU)",
    "encode": "encoding COPY payloads (CPU)",
    "ensure_partitions": "database: daily partitions",
    "ack": "acking MQTT",
    "_merge_aggregates": "database: merge partial aggregates (upsert)",
    "aggregate": "stream core: partial aggregates (CPU)",
    "write_batch": "database: readings COPY / insert new / commit",
    "insert_rejects": "database: rejects",
    "_record_kits": "database: kit status and last seen",
    "write": "database: transaction begin / commit, notify",
    "process_batch": "stream core: QA, cells, rides (CPU)",
    "admit": "ingest: admit (decode, authenticate, validate)",
    "load": "database: reading kit keys",
    # Only what is not inside the step it retries: the back-off wait.
    "_with_retries": "waiting out a database outage (back-off)",
}


def summarise_profile(raw: Path) -> dict[str, dict[str, float]]:
    """Per ingest thread, shares of its samples (py-spy raw format, idle samples included)."""
    counts: dict[str, dict[str, int]] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        names = [f.split(" (")[0].rsplit(".", 1)[-1] for f in stack.split(";")]
        thread = next((PROFILE_THREADS[f] for f in names if f in PROFILE_THREADS), None)
        if thread is None:
            continue
        bucket = next(
            (PROFILE_BUCKETS[f] for f in reversed(names) if f in PROFILE_BUCKETS), "other"
        )
        per_thread = counts.setdefault(thread, {})
        per_thread[bucket] = per_thread.get(bucket, 0) + int(n)
    return {
        thread: {
            k: v / sum(buckets.values()) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])
        }
        for thread, buckets in counts.items()
    }


class BackendSampler(threading.Thread):
    """What ingest's database sessions are doing, sampled from ``pg_stat_activity``.

    Per application name: "running" (active, no wait event: on a CPU, or waiting for
    something PostgreSQL does not report), a wait event (``IO:WALSync``, ``Lock:…``),
    "idle in transaction" (the server waits for the client inside a transaction) or
    "idle" (nothing to do: waiting for ingest).
    """

    def __init__(self, db: str, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.db, self.interval_s = db, interval_s
        self.stop = threading.Event()
        self.counts: dict[str, dict[str, int]] = {}

    def run(self) -> None:
        with psycopg.connect(self.db, autocommit=True) as conn:
            while not self.stop.wait(self.interval_s):
                for app, state, kind, event in conn.execute(
                    "SELECT application_name, state, wait_event_type, wait_event"
                    " FROM pg_stat_activity WHERE application_name LIKE 'bikesense-stream%'"
                    " AND pid <> pg_backend_pid()"
                ):
                    if state == "active":
                        what = f"{kind}:{event}" if kind else "running"
                    else:
                        what = str(state)
                    per_app = self.counts.setdefault(str(app), {})
                    per_app[what] = per_app.get(what, 0) + 1

    def shares(self) -> dict[str, dict[str, float]]:
        return {
            app: {k: v / sum(c.values()) for k, v in sorted(c.items(), key=lambda kv: -kv[1])}
            for app, c in self.counts.items()
        }


class Prober(threading.Thread):
    """Marker frames one at a time: publish, then poll the API until its rows are there
    (every ``poll_s``, then at a twentieth of the time waited: latencies to within 5 %)."""

    def __init__(
        self,
        mqtt_url: str,
        api_url: str,
        api_key: str,
        secret: bytes,
        interval_s: float = 0.1,
        first_seq: int = 0,
        poll_s: float = 0.005,
    ) -> None:
        super().__init__(daemon=True)
        self.mqtt_url, self.api_url, self.api_key = mqtt_url, api_url, api_key
        self.secret = secret
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.stop = threading.Event()
        self.latencies_s: list[float] = []
        self.timeouts = 0
        self.published = 0
        self.rng = np.random.default_rng(11)
        self.first_seq = first_seq

    def run(self) -> None:
        publisher = MqttPublisher(
            self.mqtt_url, topic_root=ROOT_TOPIC, client_id=f"bench-prober-{self.first_seq}"
        )
        publisher.connect()
        with httpx.Client(
            base_url=self.api_url, headers={"X-API-Key": self.api_key}, timeout=10
        ) as http:
            seq = self.first_seq
            while not self.stop.is_set():
                start_ms = int(time.time() * 1000) - 20_000
                readings = frame_readings(MARKER_KIT, 0, start_ms, self.rng)
                frame = encode_readings(MARKER_KIT, 1, seq, readings, self.secret)
                params = {
                    "format": "csv",
                    "kit": str(MARKER_KIT),
                    "from": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                    "to": datetime.fromtimestamp((start_ms + 10_000) / 1000, UTC).isoformat(),
                }
                sent = time.perf_counter()
                publisher.publish(f"{ROOT_TOPIC}/kits/{MARKER_KIT}/up", frame)
                self.published += 1
                seq += 1
                while True:
                    text = http.get("/v1/exports/readings", params=params).text
                    # Rows: the lines after the header that are not comments (docs/api.md).
                    lines = text.splitlines()
                    if sum(not ln.startswith("#") for ln in lines) - 1 >= PER_FRAME:
                        self.latencies_s.append(time.perf_counter() - sent)
                        break
                    waited = time.perf_counter() - sent
                    if waited > 30:
                        self.timeouts += 1
                        break
                    # Every poll is an export request (API and PostgreSQL CPU that the
                    # contenders without a prober do not pay): after the first 0.1 s,
                    # poll at a twentieth of the time waited, so a latency is read to
                    # within 5 % and a saturated run's seconds-long waits cost a few
                    # dozen requests, not hundreds.
                    time.sleep(max(self.poll_s, waited / 20))
                self.stop.wait(self.interval_s)
        publisher.close()


def burst_publish(
    mqtt_url: str,
    client_id: str,
    messages: Iterable[tuple[str, bytes]],
    *,
    inflight: int,
    timeout_s: float = 120.0,
) -> int:
    """QoS 1 publishes of prepared messages as fast as the broker acknowledges them, with
    at most ``inflight`` unacknowledged; returns how many were published.

    One thread drives paho's loop itself, with no network thread: the kits'
    simulator (simulators.publisher.MqttPublisher, paho's threaded loop) wakes that
    thread for every message, and took 2.3-2.8 times the CPU per message (154-276
    against 67-97 µs, 20,000 messages, three interleaved rounds). The publishers
    share the machine with the pipeline they feed, so what they cost is taken from it.
    """
    parts = urlsplit(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(inflight)
    acked = sent = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1

    def acked_at_least(n: int) -> Callable[[], bool]:
        return lambda: acked >= n

    def pump(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            rc = client.loop(0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{client_id}: no {what} ({mqtt.error_string(rc)}, "
                    f"{sent - acked} unacknowledged)"
                )

    client.on_publish = on_publish
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=60)
    try:
        pump(client.is_connected, "CONNACK")
        for topic, payload in messages:
            if sent - acked >= inflight:
                pump(acked_at_least(sent - inflight // 2), "acknowledgements")
            info = client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(
                    f"{client_id}: paho refused to publish: {mqtt.error_string(info.rc)}"
                )
            sent += 1
            if sent % 32 == 0:
                client.loop(0)  # take the acknowledgements that have come in
        pump(acked_at_least(sent), "acknowledgements")
    finally:
        client.disconnect()
        client._reset_sockets()
    return sent


def publish_all(
    mqtt_url: str,
    frames: list[tuple[int, bytes]],
    *,
    publishers: int,
    inflight: int,
    prefix: str = ROOT_TOPIC,
) -> list[int]:
    """Publish every frame over ``publishers`` connections (a kit always on the same one)."""
    sent = [0] * publishers

    def work(i: int) -> None:
        sent[i] = burst_publish(
            mqtt_url,
            f"bench-pub-{prefix}-{i}",
            (
                (f"{prefix}/kits/{kit}/up", payload)
                for kit, payload in frames
                if kit % publishers == i
            ),
            inflight=inflight,
        )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent


def readings_acked(http: httpx.Client) -> int:
    """``bikesense_readings_stored_total`` from ingest's metrics: readings committed and
    acked (a batch is counted once it and every batch before it are acked), markers
    included."""
    for family in text_string_to_metric_families(http.get("/metrics").text):
        if family.name == "bikesense_readings_stored":
            return int(sum(s.value for s in family.samples if s.name.endswith("_total")))
    raise RuntimeError("ingest's metrics have no bikesense_readings_stored")


def count_non_marker(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        return int(
            conn.execute(  # type: ignore[index]
                "SELECT count(*) FROM readings WHERE kit_id <> %s", (MARKER_KIT,)
            ).fetchone()[0]
        )


def publish_paced(mqtt_url: str, frames: list[tuple[int, bytes]], frames_per_s: float) -> None:
    """Publish at a steady rate, as a fleet below the pipeline's capacity would."""
    with MqttPublisher(
        mqtt_url,
        topic_root=ROOT_TOPIC,
        client_id="bench-paced",
        max_inflight=1000,
        ack_timeout_s=120,
    ) as pub:
        started = time.perf_counter()
        for k, (kit, payload) in enumerate(frames):
            wait = started + k / frames_per_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pub.publish(f"{ROOT_TOPIC}/kits/{kit}/up", payload)


def run_pipeline(
    base: str,
    mqtt_url: str,
    n_readings: int,
    kits: int,
    publishers: int,
    inflight: int,
    postmaster: int,
    broker_pid: int,
    profile: Path | None,
    *,
    paced_fraction: float,
    paced_seconds: float,
    source: Path = ROOT,
    options: Sequence[str] = (),
) -> tuple[dict[str, Any], np.ndarray, Fleet]:
    db = new_database(base, "bench_e2e", source)
    master = MasterKey.generate()
    with psycopg.connect(db, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in range(1, kits + 1)}
        marker_secret = register_kit(conn, master, MARKER_KIT).secret
        # An admin key: the marker is found by its kit id, which researchers never see.
        api_key = create_key(conn, Role.ADMIN, "bench-e2e").token
    print(f"generating {n_readings:,} readings in frames of {PER_FRAME} ...", flush=True)
    frames = make_frames(secrets, n_readings)
    n = len(frames) * PER_FRAME
    log_path = Path(tempfile.mkstemp(prefix="bikesense-bench-ingest-", suffix=".log")[1])
    enriched = enriched_rows(frames, secrets)
    metrics_port = free_port()
    with (
        api_server(db) as (api_url, api_pid),
        ingest_process(
            db,
            mqtt_url,
            master,
            log_path,
            source,
            # the runtime logs each batch it commits at DEBUG
            "DEBUG" if profile is not None else "WARNING",
            options,
            metrics_port,
        ) as proc,
    ):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM rejected_frames")
        # Saturated, a marker waits seconds in the broker's queue: polling every 5 ms then
        # took the API server a quarter of a core and PostgreSQL a tenth, from the
        # pipeline under measurement. 0.1 s is fine enough for seconds.
        prober = Prober(mqtt_url, api_url, api_key, marker_secret, poll_s=0.1)
        cpu0 = cpu_seconds(proc.pid)
        api0 = cpu_seconds(api_pid)
        pg0 = cpu_seconds(postmaster, children=True)
        broker0 = cpu_seconds(broker_pid)
        own0 = cpu_seconds(os.getpid())
        sessions = ingest_backends(db)
        merged0 = partial_rows_merged(db)
        sessions0 = {pid: cpu_seconds(pid) for pid in sessions}
        load0 = os.getloadavg()
        spy = None
        sampler = None
        if profile is not None:
            # --nonblocking: sampling must not pause ingest 200 times a second.
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--idle",
                    "--nonblocking",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            sampler = BackendSampler(db)
            sampler.start()
        print(f"publishing {len(frames):,} frames ({n:,} readings) ...", flush=True)
        started = time.perf_counter()
        publisher = threading.Thread(
            target=publish_all,
            args=(mqtt_url, frames),
            kwargs={"publishers": publishers, "inflight": inflight},
        )
        publisher.start()
        prober.start()
        # Progress from ingest's own counter, the end from the table. A count(*) of the
        # readings every 0.1 s took PostgreSQL 20-30 ms of CPU each (parallel workers
        # besides) at 100,000-300,000 rows: a tenth of the machine, from the pipeline
        # under measurement. The counter lags what is visible (a batch counts once acked),
        # so the run ends at the first count(*) that finds every reading.
        samples: list[tuple[float, int]] = []
        with (
            psycopg.connect(db, autocommit=True) as conn,
            httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as http,
        ):
            counted, done = -1, False
            while not done:
                acked = readings_acked(http)
                now = time.perf_counter() - started
                # Markers seen through the API are stored; one more may be.
                stored = min(acked - PER_FRAME * len(prober.latencies_s), n)
                if stored >= n and acked != counted:
                    counted = acked
                    stored = int(
                        conn.execute(  # type: ignore[index]
                            "SELECT count(*) FROM readings WHERE kit_id <> %s", (MARKER_KIT,)
                        ).fetchone()[0]
                    )
                    now = time.perf_counter() - started
                    done = stored >= n
                samples.append((now, stored))
                if len(samples) % 20 == 0:
                    print(f"  {now:6.1f} s: {stored:,} stored", flush=True)
                stalled = [c for t, c in samples if t > now - 30]
                done = done or (now > 30 and stalled[0] == stored)
                if not done:
                    time.sleep(0.1)
        elapsed = samples[-1][0]
        saturated_log_bytes = log_path.stat().st_size
        cpu = cpu_seconds(proc.pid) - cpu0
        api_cpu = cpu_seconds(api_pid) - api0
        pg_cpu = cpu_seconds(postmaster, children=True) - pg0
        broker_cpu = cpu_seconds(broker_pid) - broker0
        # This process: the publishers, the prober and the loop counting stored rows.
        own_cpu = cpu_seconds(os.getpid()) - own0
        # Ingest's own sessions only: the prober's API polls and this loop's counts are not
        # part of ingesting (the sessions live as long as ingest, unless the database went).
        # A write-stage thread opens its connection when it first writes: sessions that
        # began during the run count whole.
        sessions_cpu = 0.0
        for pid in set(sessions0) | set(ingest_backends(db)):
            with suppress(FileNotFoundError):
                sessions_cpu += cpu_seconds(pid) - sessions0.get(pid, 0.0)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        if sampler is not None:
            sampler.stop.set()
            sampler.join(10)
        publisher.join()
        prober.stop.set()
        prober.join(60)
        time.sleep(1.5)  # an idle backend reports its table statistics within a second
        merged = partial_rows_merged(db) - merged0
        # Phase two: the same pipeline below saturation, at a paced rate, for the latency.
        paced_rate = paced_fraction * n / elapsed
        paced_frames = make_frames(secrets, int(paced_rate * paced_seconds), boot=2)
        paced_prober = Prober(mqtt_url, api_url, api_key, marker_secret, first_seq=10**6)
        paced_prober.start()
        publish_paced(mqtt_url, paced_frames, paced_rate / PER_FRAME)
        expected = n + len(paced_frames) * PER_FRAME
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and count_non_marker(db) < expected:
            time.sleep(0.2)
        paced_prober.stop.set()
        paced_prober.join(60)
        time.sleep(2)  # anything late or redelivered would show now
        with psycopg.connect(db, autocommit=True) as conn:
            stored, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
            ).fetchone()  # type: ignore[misc]
            rejected = int(
                conn.execute(  # type: ignore[index]
                    "SELECT count(*) FROM rejected_frames"
                ).fetchone()[0]
            )
        rss = rss_peak_kib(proc.pid)
    # Ingest has stopped (and merged whatever aggregates waited): do they add up?
    try:
        aggregates = aggregates_check(db)
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
        aggregates = {"error": repr(exc)}
    ingest_log = log_path.read_bytes().decode(errors="replace")
    batches = batch_sizes(ingest_log[:saturated_log_bytes])
    # A database error retried (a deadlock, a lock timeout) would show only as a slow
    # run: say so.
    warnings = [
        line for line in ingest_log.splitlines() if " WARNING " in line or " ERROR " in line
    ]
    log_path.unlink()
    published = (
        n + len(paced_frames) * PER_FRAME + (prober.published + paced_prober.published) * PER_FRAME
    )
    paced_lat = sorted(paced_prober.latencies_s)

    def at(fraction: float) -> tuple[float, int]:
        return next(s for s in samples if s[1] >= fraction * n)

    t10, c10 = at(0.1)
    t90, c90 = at(0.9)
    lat = sorted(prober.latencies_s)
    figures = {
        "readings": n,
        "frames": len(frames),
        "readings_per_frame": PER_FRAME,
        "kits": kits,
        "publishers": publishers,
        "publisher_max_inflight": inflight,
        "seconds": elapsed,
        "readings_per_s": n / elapsed,
        "readings_per_s_sustained_10_to_90pct": (c90 - c10) / (t90 - t10),
        "published_readings": published,
        "stored_readings": stored,
        "lost": published - stored,
        "duplicated": stored - distinct,
        "aggregates_check": aggregates,
        "rejected_frames": rejected,
        "ingest_cpu_s": cpu,
        "ingest_cpu_cores_busy": cpu / elapsed,
        "postgres_cpu_s": pg_cpu,
        "postgres_cpu_cores_busy": pg_cpu / elapsed,
        # CPU time per stored reading: steadier than readings/s on a machine shared with
        # other work, and what bounds the rate once both cores are busy.
        "api_server_cpu_cores_busy": api_cpu / elapsed,
        "broker_cpu_cores_busy": broker_cpu / elapsed,
        "publishers_and_bench_cpu_cores_busy": own_cpu / elapsed,
        # Rows inserted or updated in cell_windows per stored reading, from the table's
        # statistics: what the batch size saves the database, for any version of ingest.
        "partial_rows_merged_per_reading": merged / n,
        "ingest_cpu_us_per_reading": cpu / n * 1e6,
        "postgres_cpu_us_per_reading": pg_cpu / n * 1e6,
        "postgres_ingest_sessions_cpu_us_per_reading": sessions_cpu / n * 1e6,
        "ingest_source": ingest_source(source),
        "ingest_options": list(options),
        "ingest_thread_profile": (
            summarise_profile(profile) if profile is not None and profile.exists() else None
        ),
        "database_session_profile": sampler.shares() if sampler is not None else None,
        "batches": batches,
        "ingest_warnings": len(warnings),
        "ingest_warning_examples": warnings[:3],
        "ingest_peak_rss_mib": rss / 1024,
        "latency_samples": len(lat),
        "latency_timeouts": prober.timeouts,
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "latency_max_s": lat[-1] if lat else None,
        "paced_readings_per_s": paced_rate,
        "paced_fraction_of_saturated_rate": paced_fraction,
        "paced_latency_samples": len(paced_lat),
        "paced_latency_timeouts": paced_prober.timeouts,
        "paced_latency_p50_s": statistics.median(paced_lat) if paced_lat else None,
        "paced_latency_p99_s": (
            paced_lat[min(len(paced_lat) - 1, int(0.99 * len(paced_lat)))] if paced_lat else None
        ),
        "paced_latency_max_s": paced_lat[-1] if paced_lat else None,
        "latency_path": (
            "publish (QoS 1) of a 10-reading marker frame → rows returned by GET "
            "/v1/exports/readings?kit=<marker> (CSV, API server process), polled "
            "every 5 ms (paced phase; every 0.1 s while saturated) and at least at a "
            "twentieth of the time waited, one marker in flight at a time, 0.1 s apart"
        ),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
    }
    return figures, enriched, Fleet(frames, secrets)


BATCH_LINE = re.compile(
    r"batch of (\d+) messages written and acked in ([\d.]+) s "
    r"\((\d+) readings new, (\d+) partial rows merged\)"
)


def batch_sizes(log: str) -> dict[str, float | None] | None:
    """Messages per committed batch and seconds per write, from ingest's DEBUG log (of
    the saturated phase); None if the runtime does not log them."""
    found = [
        (int(m), float(s), int(new), int(merged)) for m, s, new, merged in BATCH_LINE.findall(log)
    ]
    if not found:
        return None
    sizes = sorted(f[0] for f in found)
    new = sum(f[2] for f in found)
    return {
        "count": len(found),
        "messages_mean": statistics.fmean(sizes),
        "messages_p50": sizes[len(sizes) // 2],
        "messages_max": sizes[-1],
        "write_s_mean": statistics.fmean(f[1] for f in found),
        "partial_rows_per_new_reading": sum(f[3] for f in found) / new if new else None,
    }


def ingest_source(source: Path) -> dict[str, Any]:
    """Which code ingest ran: the checkout, its commit, and whether it had local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "path": str(source),
        "commit": commit or None,
        "modified": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
    }


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# -- 2. the bare COPY -----------------------------------------------------------------------


def bare_copy(base: str, enriched: np.ndarray, batch: int) -> dict[str, Any]:
    db = new_database(base, "bench_e2e_copy")
    columns = READING_COLUMNS[1:]
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    statement = sql.SQL("COPY readings ({}) FROM STDIN (FORMAT BINARY)").format(names)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, sorted({int(d) for d in enriched["ts_ms"] // 86_400_000}))
        started = time.perf_counter()
        for i in range(0, len(enriched), batch):
            part = enriched[i : i + batch]
            values = {name: part[name] for name in ENRICHED_DTYPE.names or ()}
            values["ts"] = copybin.ms_to_pg_timestamp(part["ts_ms"])
            values["received_at"] = copybin.ms_to_pg_timestamp(part["received_ms"])
            payload = copybin.encode(columns, values, len(part))
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                copy.write(payload)
        seconds = time.perf_counter() - started
    return {
        "readings": len(enriched),
        "batch": batch,
        "seconds": seconds,
        "readings_per_s": len(enriched) / seconds,
        "what": "binary COPY of the pipeline's enriched rows into readings (partitions, "
        "unique key, index) of a fresh database on the same server, one "
        "transaction per batch, encoding included",
    }


# -- 3. the minimal pipeline ----------------------------------------------------------------

#: Every column of ``readings`` but ``cell`` (NULL): the decoded reading, when it was
#: received, and zero for the two NOT NULL columns the stream core would fill.
RAW_COLUMNS = tuple(c for c in TABLE_COLUMNS if c.name != "cell")
#: Messages taken at a time (as in issue 28's measurement), and held at most in the queue
#: while a batch is written: two batches' worth.
MINIMAL_BATCH_MESSAGES = 2_000
MINIMAL_QUEUE_MESSAGES = 2 * MINIMAL_BATCH_MESSAGES


class MinimalSubscriber:
    """MQTT in, decode, COPY the raw rows, ack after the commit; nothing else.

    What any ingest on this rig has to do at the least: receive through
    ingest's own paho boundary (``ingest.mqtt.MqttSubscriber``: 3.1.1, QoS 1,
    persistent session, manual acks) into a queue of at most ``queue_messages``
    (full, paho's network thread blocks and the broker stops sending: the
    back-pressure ingest applies), take up to ``batch_messages`` at a time,
    decode them with ``decode_readings_many``, encode the raw reading columns
    with ``copybin.encode`` and COPY them into ``readings`` in one transaction,
    then ack them. No stream core, no aggregates, no de-duplication: a
    redelivered frame would break the COPY on the primary key, and the run with
    it. Refused frames are counted and acked.
    """

    def __init__(
        self,
        mqtt_url: str,
        db: str,
        secrets: dict[int, bytes],
        *,
        batch_messages: int = MINIMAL_BATCH_MESSAGES,
        queue_messages: int = MINIMAL_QUEUE_MESSAGES,
    ) -> None:
        self.secrets = secrets
        self.batch_messages = batch_messages
        self.queue: queue.Queue[InboundMessage] = queue.Queue(maxsize=queue_messages)
        self.subscriber = MqttSubscriber(
            mqtt_url,
            client_id="bench-minimal",
            subscriptions=[f"{MINIMAL_TOPIC}/kits/+/up"],
            deliver=self.queue.put,
        )
        self.conn = psycopg.connect(db, autocommit=True, application_name="bench-minimal")
        self.statement = sql.SQL("COPY readings ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in RAW_COLUMNS)
        )
        self.stored = 0
        self.refused = 0
        self.batches = 0
        #: (time.monotonic() of each commit, readings stored by then)
        self.progress: list[tuple[float, int]] = []

    def take(self, wait_s: float) -> list[InboundMessage]:
        """The next batch: what is queued, up to ``batch_messages``, waiting for the first."""
        try:
            batch = [self.queue.get(timeout=wait_s)]
        except queue.Empty:
            return []
        with suppress(queue.Empty):
            while len(batch) < self.batch_messages:
                batch.append(self.queue.get_nowait())
        return batch

    def write(self, batch: Sequence[InboundMessage]) -> None:
        decoded = decode_readings_many([m.payload for m in batch], self.secrets.get)
        readings = decoded.readings
        n = len(readings)
        if n:
            values = {name: readings[name] for name in READING_DTYPE.names or ()}
            values["ts"] = copybin.ms_to_pg_timestamp(readings["ts_ms"])
            received_ms = np.repeat(
                np.fromiter((m.received_ms for m in batch), np.int64, len(batch)),
                np.diff(decoded.starts),
            )
            values["received_at"] = copybin.ms_to_pg_timestamp(received_ms)
            values["qa_flags"] = values["ride_id"] = np.zeros(n, np.int64)
            payload = copybin.encode(RAW_COLUMNS, values, n)
            with (
                self.conn.transaction(),
                self.conn.cursor() as cur,
                cur.copy(self.statement) as copy,
            ):
                copy.write(payload)
        self.subscriber.ack(batch)
        self.stored += n
        self.refused += len(decoded.errors)
        self.batches += 1
        self.progress.append((time.monotonic(), self.stored))


def minimal_subscriber_process(
    mqtt_url: str,
    db: str,
    secrets: dict[int, bytes],
    stored: Any,
    committed_at: Any,
    stop: ProcessEvent,
    report: Connection,
) -> None:
    """The minimal pipeline's subscriber as a process of its own: says "ready" once
    subscribed, keeps ``stored`` (readings) and ``committed_at`` (``time.monotonic()`` of
    the last commit) current for the parent, and reports its counts once ``stop`` is set."""
    try:
        minimal = MinimalSubscriber(mqtt_url, db, secrets)
        minimal.subscriber.start()
        report.send("ready")
        while not stop.is_set():
            batch = minimal.take(0.1)
            if batch:
                minimal.write(batch)
                stored.value, committed_at.value = minimal.stored, minimal.progress[-1][0]
        minimal.subscriber.stop()
        minimal.conn.close()
        report.send(
            {
                "stored": minimal.stored,
                "refused": minimal.refused,
                "batches": minimal.batches,
                "progress": minimal.progress,
            }
        )
    except Exception as exc:  # the parent raises it with the run's context
        report.send(f"minimal subscriber failed: {exc!r}")
        raise


def run_minimal(
    base: str,
    mqtt_url: str,
    fleet: Fleet,
    days: list[int],
    publishers: int,
    inflight: int,
    postmaster: int,
    broker_pid: int,
) -> dict[str, Any]:
    """The minimal pipeline on the pipeline's frames, publishers and broker.

    The subscriber runs as a child process (spawned, so none of this process's threads
    or connections come along), so that its CPU time is its own; the publishers'
    threads run in this process, which meanwhile only reads two shared numbers every
    0.1 s (no count(*) while it runs).
    """
    db = new_database(base, "bench_e2e_minimal")
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, days)
    n = len(fleet.frames) * PER_FRAME
    ctx = multiprocessing.get_context("spawn")
    stored, committed_at = ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False)
    stop = ctx.Event()
    report, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=minimal_subscriber_process,
        args=(mqtt_url, db, fleet.secrets, stored, committed_at, stop, child_end),
        name="bench-minimal",
        daemon=True,
    )
    proc.start()
    pid = proc.pid
    assert pid is not None, "a started process has an id"
    try:
        ready = report.recv() if report.poll(60) else "no word within 60 s"
        if ready != "ready":
            raise RuntimeError(f"the minimal subscriber did not start: {ready}")
        print(f"minimal pipeline: publishing {len(fleet.frames):,} frames ...", flush=True)
        cpu0 = cpu_seconds(pid)
        pg0 = cpu_seconds(postmaster, children=True)
        broker0 = cpu_seconds(broker_pid)
        own0 = cpu_seconds(os.getpid())
        started = time.monotonic()
        sent = publish_all(
            mqtt_url, fleet.frames, publishers=publishers, inflight=inflight, prefix=MINIMAL_TOPIC
        )
        published = sum(sent) * PER_FRAME
        last, last_change = stored.value, time.monotonic()
        while stored.value < published and time.monotonic() - last_change < 30:
            if not proc.is_alive():
                break
            time.sleep(0.1)
            if stored.value != last:
                last, last_change = stored.value, time.monotonic()
        cpu = cpu_seconds(pid) - cpu0
        pg_cpu = cpu_seconds(postmaster, children=True) - pg0
        broker_cpu = cpu_seconds(broker_pid) - broker0
        own_cpu = cpu_seconds(os.getpid()) - own0
        elapsed = committed_at.value - started
        stop.set()
        if stored.value == 0:
            raise RuntimeError("the minimal subscriber stored nothing in 30 s")
        counts = report.recv() if report.poll(30) else "no report within 30 s"
        if not isinstance(counts, dict):
            raise RuntimeError(str(counts))
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    time.sleep(1)  # anything late or redelivered would show now (or break the COPY)
    with psycopg.connect(db, autocommit=True) as conn:
        in_table, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
        ).fetchone()  # type: ignore[misc]
    progress: list[tuple[float, int]] = counts["progress"]

    def at(fraction: float) -> tuple[float, int] | None:
        return next((p for p in progress if p[1] >= fraction * n), None)

    p10, p90 = at(0.1), at(0.9)
    sustained = (p90[1] - p10[1]) / (p90[0] - p10[0]) if p10 and p90 and p90[0] > p10[0] else None
    per_reading = {
        "publishers": own_cpu,
        "subscriber": cpu,
        "mosquitto": broker_cpu,
        "postgresql": pg_cpu,
    }
    return {
        "readings": n,
        "frames": len(fleet.frames),
        "publishers": publishers,
        "publisher_max_inflight": inflight,
        "batch_messages_max": MINIMAL_BATCH_MESSAGES,
        "queue_messages_max": MINIMAL_QUEUE_MESSAGES,
        "subscriber_runs_in": "a child process (multiprocessing, spawn)",
        "seconds": elapsed,
        "readings_per_s": in_table / elapsed,
        "readings_per_s_sustained_10_to_90pct": sustained,
        "published_readings": published,
        "stored_readings": in_table,
        "lost": published - in_table,
        "duplicated": in_table - distinct,
        "refused_frames": counts["refused"],
        "batches": counts["batches"],
        "messages_per_batch_mean": len(fleet.frames) / counts["batches"],
        "cpu_us_per_reading": {k: v / n * 1e6 for k, v in per_reading.items()},
        "cpu_cores_busy": {k: v / elapsed for k, v in per_reading.items()},
        "cpu_note": "publishers: this process (the publishers' threads and a loop reading "
        "two shared numbers every 0.1 s); PostgreSQL: the postmaster and all its children",
        "what": "the pipeline's frames, publishers and broker → paho 3.1.1 QoS 1, manual "
        "acks, bounded queue → decode_readings_many, up to 2,000 messages → binary COPY "
        "of the raw reading columns into readings of a fresh database → ack after commit",
    }


# -- 4. the naive way -----------------------------------------------------------------------


class NaiveSubscriber:
    """paho on_message → decode → one INSERT per reading, autocommit."""

    def __init__(self, db: str, secrets: dict[int, bytes]) -> None:
        self.conn = psycopg.connect(db, autocommit=True)
        self.secrets = secrets
        self.states: dict[int, Any] = {}
        self.inserted = 0
        self.first: float | None = None
        names = [c.name for c in READING_COLUMNS[1:]]
        self.names = names
        self.statement = sql.SQL(
            "INSERT INTO readings ({}) VALUES ({}) ON CONFLICT DO NOTHING"
        ).format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )

    def on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        payload = bytes(message.payload)
        kit = peek_header(payload).kit_id
        readings = decode_readings(payload, self.secrets[kit]).readings
        now = int(time.time() * 1000)
        processed = process_batch(readings, now, self.states, CoreConfig())
        self.states = processed.states
        for row in processed.enriched:
            values = {n: row[n].item() for n in ENRICHED_DTYPE.names or ()}
            values["ts"] = datetime.fromtimestamp(values["ts_ms"] / 1000, UTC)
            values["received_at"] = datetime.fromtimestamp(now / 1000, UTC)
            self.conn.execute(self.statement, [values[n] for n in self.names])
            self.inserted += 1


def run_naive(
    base: str,
    mqtt_url: str,
    frames: list[tuple[int, bytes]],
    secrets: dict[int, bytes],
    seconds: float,
) -> dict[str, Any]:
    db = new_database(base, "bench_e2e_naive")
    naive = NaiveSubscriber(db, secrets)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv311
    )
    client.on_message = naive.on_message
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.subscribe(f"{NAIVE_TOPIC}/kits/+/up", qos=1)
    client.loop_start()
    time.sleep(0.5)
    feeder = threading.Thread(
        target=publish_all,
        args=(mqtt_url, frames),
        kwargs={"publishers": 1, "inflight": 200, "prefix": NAIVE_TOPIC},
        daemon=True,
    )
    feeder.start()
    deadline = time.perf_counter() + seconds + 5
    while time.perf_counter() < deadline:
        if naive.first is not None and time.perf_counter() - naive.first >= seconds:
            break
        time.sleep(0.05)
    inserted, first = naive.inserted, naive.first or time.perf_counter()
    elapsed = time.perf_counter() - first
    client.disconnect()
    client.loop_stop()
    naive.conn.close()
    return {
        "readings_inserted": inserted,
        "seconds": elapsed,
        "readings_per_s": inserted / elapsed if elapsed > 0 else 0.0,
        "what": "paho on_message (QoS 1) → decode + stream core per frame → one INSERT "
        "per reading, autocommit; run for a bounded time on a subset",
    }


# -- the report -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--kits", type=int, default=200)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument(
        "--inflight", type=int, default=1000, help="unacknowledged QoS 1 messages per publisher"
    )
    parser.add_argument("--naive-seconds", type=float, default=15.0)
    parser.add_argument("--copy-batch", type=int, default=10_000)
    parser.add_argument(
        "--broker-max-inflight",
        type=int,
        default=None,
        help="override Mosquitto's max_inflight_messages (default: bikesense's "
        "own broker configuration)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the ingest process with py-spy and report where its worker thread's time goes",
    )
    parser.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PostgreSQL with fsync and synchronous commit (the real settings)",
    )
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.5,
        help="phase two publishes at this fraction of the saturated rate",
    )
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--ingest-option",
        action="append",
        default=[],
        help="pass this option on to `bikesense ingest` (repeat it for "
        "several), e.g. --ingest-option=--writers=1",
    )
    parser.add_argument(
        "--ingest-source",
        type=Path,
        default=ROOT,
        help="run `bikesense ingest` from this checkout (e.g. an earlier commit, "
        "for a before/after comparison on the same machine)",
    )
    args = parser.parse_args()

    profile = Path(tempfile.mkstemp(suffix=".pyspy")[1]) if args.profile else None
    with services(args.broker_max_inflight, args.durable) as (cluster, broker, broker_pid):
        base = cluster.url
        about = machine(base)
        inflight_window = broker_max_inflight(broker)
        pipeline, enriched, fleet = run_pipeline(
            base,
            broker.url,
            args.readings,
            args.kits,
            args.publishers,
            args.inflight,
            cluster.pid(),
            broker_pid,
            profile,
            paced_fraction=args.paced_fraction,
            paced_seconds=args.paced_seconds,
            source=args.ingest_source.resolve(),
            options=args.ingest_option,
        )
        ceiling = bare_copy(base, enriched, args.copy_batch)
        minimal = run_minimal(
            base,
            broker.url,
            fleet,
            sorted({int(d) for d in enriched["ts_ms"] // 86_400_000}),
            args.publishers,
            args.inflight,
            cluster.pid(),
            broker_pid,
        )
        secrets = {k: os.urandom(32) for k in range(1, 21)}
        naive_frames = make_frames(secrets, 50_000)
        naive = run_naive(base, broker.url, naive_frames, secrets, args.naive_seconds)
    if profile is not None:
        profile.unlink(missing_ok=True)

    rate = pipeline["readings_per_s"]
    ratios = {
        "to_bare_copy": rate / ceiling["readings_per_s"],
        "to_minimal": rate / minimal["readings_per_s"],
        "to_naive": rate / naive["readings_per_s"],
    }
    checks = {
        "readings_per_s": rate >= TARGETS["readings_per_s"],
        "ratio_to_bare_copy": ratios["to_bare_copy"] >= TARGETS["ratio_to_bare_copy"],
        "ratio_to_minimal": ratios["to_minimal"] >= TARGETS["ratio_to_minimal"],
        "ratio_to_naive": ratios["to_naive"] >= TARGETS["ratio_to_naive"],
        "p99_latency_s": (
            pipeline["paced_latency_p99_s"] is not None
            and pipeline["paced_latency_p99_s"] < TARGETS["p99_latency_s"]
        ),
        "nothing_lost_or_duplicated": pipeline["lost"] == 0 and pipeline["duplicated"] == 0,
    }
    doc = {
        "benchmark": "e2e",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        "broker_max_inflight_messages": inflight_window,
        "postgresql_durable": args.durable,
        "targets": TARGETS,
        "pipeline": pipeline,
        "bare_copy": ceiling,
        "minimal": minimal,
        "naive": naive,
        "ratios": ratios,
        "meets_target": checks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")

    print(
        f"\n{about['cpu_model']}, {about['cores']} cores, {about['memory_gib']} GiB, "
        f"PostgreSQL {about['postgresql']}; load {pipeline['load_average_before']} → "
        f"{pipeline['load_average_after']}\n"
    )
    w = 66  # the longest contender's name
    print(f"{'contender':<{w}} {'readings/s':>12} {'pipeline is':>12}")
    print(f"{'pipeline (MQTT → bikesense ingest → PG)':<{w}} {rate:>12,.0f} {'':>12}")
    print(
        f"{'  sustained, 10 % → 90 % stored':<{w}} "
        f"{pipeline['readings_per_s_sustained_10_to_90pct']:>12,.0f}"
    )
    print(
        f"{'bare COPY of the same rows':<{w}} {ceiling['readings_per_s']:>12,.0f} "
        f"{ratios['to_bare_copy']:>11.2f}x"
    )
    print(
        f"{'minimal pipeline: MQTT → decode → COPY raw (ceiling on this rig)':<{w}} "
        f"{minimal['readings_per_s']:>12,.0f} {ratios['to_minimal']:>11.2f}x"
    )
    print(
        f"{'naive: on_message → INSERT per reading':<{w}} {naive['readings_per_s']:>12,.0f} "
        f"{ratios['to_naive']:>11.1f}x"
    )
    p50, p99 = pipeline["latency_p50_s"], pipeline["latency_p99_s"]
    print(
        f"\npublish → visible through the API, saturated: p50 {p50 or float('nan'):.3f} s, "
        f"p99 {p99 or float('nan'):.3f} s over {pipeline['latency_samples']} markers "
        f"({pipeline['latency_timeouts']} timed out)"
    )
    q50, q99 = pipeline["paced_latency_p50_s"], pipeline["paced_latency_p99_s"]
    print(
        f"publish → visible through the API, paced at {pipeline['paced_readings_per_s']:,.0f} "
        f"readings/s: p50 {q50 or float('nan'):.3f} s, p99 {q99 or float('nan'):.3f} s over "
        f"{pipeline['paced_latency_samples']} markers "
        f"({pipeline['paced_latency_timeouts']} timed out)"
    )
    print(
        f"published {pipeline['published_readings']:,}, stored "
        f"{pipeline['stored_readings']:,}: lost {pipeline['lost']}, duplicated "
        f"{pipeline['duplicated']}; ingest used {pipeline['ingest_cpu_cores_busy']:.2f} "
        f"cores, peak RSS {pipeline['ingest_peak_rss_mib']:.0f} MiB; "
        f"{pipeline['ingest_warnings']} warnings or errors in ingest's log"
    )
    ag = pipeline["aggregates_check"]
    if "error" in ag:
        print(f"aggregates check failed: {ag['error']}")
    else:
        print(
            f"aggregates of the {ag['readings_aggregated']:,} stored readings after ingest "
            f"stopped: {ag['metric_window_sums_differing']} of {ag['metric_window_sums']} "
            "(metric, resolution, window) counts and "
            f"{ag['presence_sums_differing']} presence totals differ from the all-at-once "
            f"aggregation; {ag['backlog_rows_left']} backlog rows left"
        )
    for line in pipeline["ingest_warning_examples"]:
        print(f"  {line[:200]}")
    print(
        f"PostgreSQL used {pipeline['postgres_cpu_cores_busy']:.2f} cores; CPU per reading: "
        f"ingest {pipeline['ingest_cpu_us_per_reading']:.0f} µs, PostgreSQL "
        f"{pipeline['postgres_cpu_us_per_reading']:.0f} µs (ingest's own sessions "
        f"{pipeline['postgres_ingest_sessions_cpu_us_per_reading']:.0f} µs); "
        f"{pipeline['partial_rows_merged_per_reading']:.2f} partial rows merged per reading; "
        "the API server "
        f"answering the prober used {pipeline['api_server_cpu_cores_busy']:.2f} cores, "
        f"Mosquitto {pipeline['broker_cpu_cores_busy']:.2f}, the publishers (and this "
        f"process's probing) {pipeline['publishers_and_bench_cpu_cores_busy']:.2f}"
    )
    for thread, shares in (pipeline["ingest_thread_profile"] or {}).items():
        for label, share in shares.items():
            print(f"  ingest {thread}: {share:6.1%} {label}")
    if pipeline["batches"]:
        b = pipeline["batches"]
        print(
            f"  batches: {b['count']:,}, messages per batch mean {b['messages_mean']:.0f}, "
            f"median {b['messages_p50']}, max {b['messages_max']}; "
            f"write + ack {b['write_s_mean']:.3f} s on average; "
            f"{b['partial_rows_per_new_reading'] or float('nan'):.2f} partial rows merged "
            "per new reading"
        )
    for app, shares in (pipeline["database_session_profile"] or {}).items():
        print(
            f"  PostgreSQL session {app}: "
            + ", ".join(f"{share:.0%} {label}" for label, share in shares.items() if share >= 0.005)
        )
    us = minimal["cpu_us_per_reading"]
    print(
        f"minimal pipeline: published {minimal['published_readings']:,}, stored "
        f"{minimal['stored_readings']:,}: lost {minimal['lost']}, duplicated "
        f"{minimal['duplicated']}; "
        f"{minimal['readings_per_s_sustained_10_to_90pct'] or float('nan'):,.0f} "
        "readings/s sustained (10 % → 90 % stored); "
        f"{minimal['messages_per_batch_mean']:.0f} messages per batch; "
        f"CPU per reading: publishers {us['publishers']:.1f} µs, subscriber "
        f"{us['subscriber']:.1f} µs, Mosquitto {us['mosquitto']:.1f} µs, PostgreSQL "
        f"{us['postgresql']:.1f} µs"
    )
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
