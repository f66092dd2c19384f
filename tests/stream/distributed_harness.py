"""The distributed runtime as an operator runs it, for the Kafka tests: real processes.

``bikesense ingest --to kafka`` and ``bikesense stream worker`` run as child
processes against the harness's PostgreSQL, Mosquitto and Kafka, each test
under its own Kafka app id (its own topics and consumer group), MQTT topic root
and database, so tests share the brokers and never each other's data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from storage.kits import MasterKey
from stream.core.partials import Metric
from stream.core.policy import EXCLUDING_FLAGS

#: Fewer partitions than the default: each rebalance and table recovery is quicker.
PARTITIONS = 4


class Process:
    """One ``bikesense`` child process with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_file = log_dir / f"{name}.log"
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "bikesense", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout_s: float = 60.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if self.popen.poll() is not None:
                msg = f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-4000:]}"
                raise AssertionError(msg)
            time.sleep(0.1)
        msg = f"{self.name} did not log {text!r} within {timeout_s:.0f} s:\n{self.log()[-4000:]}"
        raise AssertionError(msg)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it does not end in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or committed on the way out."""
        self.popen.kill()
        self.popen.wait(10)


@dataclass
class Deployment:
    """One distributed deployment on the shared brokers: its database, topics and processes."""

    database_url: str
    mqtt_url: str
    kafka_url: str
    master: MasterKey
    log_dir: Path
    app_id: str = field(default_factory=lambda: f"bikesense-test-{uuid.uuid4().hex[:10]}")
    processes: list[Process] = field(default_factory=list)

    @property
    def topic_root(self) -> str:
        return f"{self.app_id}/bikesense/v1"

    def env(self, name: str) -> dict[str, str]:
        state = self.log_dir / name
        state.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "BIKESENSE_DATABASE_URL": self.database_url,
            "BIKESENSE_MQTT_URL": self.mqtt_url,
            "BIKESENSE_KAFKA_URL": self.kafka_url,
            "BIKESENSE_KAFKA_APP_ID": self.app_id,
            "BIKESENSE_KAFKA_PARTITIONS": str(PARTITIONS),
            "BIKESENSE_KIT_MASTER_KEY": self.master.to_text(),
            "BIKESENSE_STATE_DIR": str(state),
        }

    def start(self, name: str, *args: str) -> Process:
        process = Process(name, list(args), self.env(name), self.log_dir)
        self.processes.append(process)
        return process

    def ingest(self) -> Process:
        """``bikesense ingest --to kafka``, subscribed (a plain subscription: one process)."""
        process = self.start(
            "ingest",
            "ingest",
            "--to",
            "kafka",
            "--client-id",
            f"{self.app_id}-ingest",
            "--share-group",
            "",
            "--topic-root",
            self.topic_root,
        )
        process.wait_for_log("runtime consuming")
        return process

    def worker(self, name: str, *, ready: bool = True) -> Process:
        """``bikesense stream worker``; with ``ready``, once faust says it is ready."""
        offset = 0
        log_file = self.log_dir / f"{name}.log"
        if log_file.exists():
            offset = len(log_file.read_text(errors="replace"))
        process = self.start(name, "stream", "worker", "--log-level", "INFO")
        if ready:
            process.wait_for_log("Worker ready", timeout_s=90, after=offset)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def dump_logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()[-8000:]}" for p in self.processes)


@contextmanager
def deployment(
    database_url: str, mqtt_url: str, kafka_url: str, master: MasterKey, log_dir: Path
) -> Iterator[Deployment]:
    """A :class:`Deployment` whose processes are stopped however the test ends; their logs
    are printed when it fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    deployed = Deployment(database_url, mqtt_url, kafka_url, master, log_dir)
    try:
        yield deployed
    except BaseException:
        # Stopped first: a worker stuck in an agent prints the agents' stacks on its way out.
        deployed.stop_all()
        sys.stderr.write(deployed.dump_logs())
        try:
            sys.stderr.write(f"\nuncommitted: {group_lags(kafka_url, deployed.app_id)}\n")
        except Exception as exc:  # noqa: BLE001 - a diagnostic only
            sys.stderr.write(f"\nuncommitted: not read ({exc!r})\n")
        raise
    finally:
        deployed.stop_all()


def count(url: str, query: str = "SELECT count(*) FROM readings", params: Any = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_count(
    url: str,
    expected: int,
    *,
    timeout_s: float = 120.0,
    check: Callable[[], None] | None = None,
    reference_url: str | None = None,
) -> None:
    """Until ``readings`` holds ``expected`` rows; fails if it holds more, or stalls (then
    naming the frames missing against ``reference_url``'s, when given)."""
    deadline = time.monotonic() + timeout_s
    got = count(url)
    while got < expected and time.monotonic() < deadline:
        if check is not None:
            check()
        time.sleep(0.25)
        got = count(url)
    if got != expected and reference_url is not None:
        missing = missing_frames(url, reference_url)
        msg = (
            f"{got} readings stored, {expected} expected; {len(missing)} frames missing"
            f" (kit, boot, seq): {missing[:10]}"
        )
        raise AssertionError(msg)
    assert got == expected, f"{got} readings stored, {expected} expected"


IDENTITY_QUERY = (
    "SELECT kit_id, boot_id, seq, idx, qa_flags, ride_id, cell FROM readings"
    " ORDER BY kit_id, boot_id, seq, idx"
)


def readings_of(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(IDENTITY_QUERY).fetchall()]


def assert_aggregates_count_each_reading_once(url: str) -> None:
    """Every partial aggregate holds exactly the readings it should, each once: for each
    window size and resolution, the readings counted in PM2.5 partials equal the stored
    readings that PM2.5 does not exclude, and the same for noise."""
    with psycopg.connect(url, autocommit=True) as conn:
        grains = conn.execute(
            "SELECT DISTINCT resolution, window_s FROM window_partials"
        ).fetchall()
        assert grains, "no partial aggregates at all"
        for metric, column in ((Metric.PM25, "pm25_ugm3"), (Metric.NOISE, "noise_laeq_db")):
            excluded = int(EXCLUDING_FLAGS[metric])
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM readings WHERE qa_flags & %s = 0 AND cell IS NOT"
                    " NULL AND {} IS NOT NULL"
                ).format(sql.Identifier(column)),
                (excluded,),
            ).fetchone()
            kept = int(row[0]) if row else 0
            for resolution, window_s in grains:
                row = conn.execute(
                    "SELECT coalesce(sum(n), 0) FROM window_partials WHERE metric = %s"
                    " AND resolution = %s AND window_s = %s",
                    (int(metric), resolution, window_s),
                ).fetchone()
                counted = int(row[0]) if row else 0
                assert counted == kept, (metric.name, resolution, window_s, counted, kept)


def partials_of(url: str) -> np.ndarray:
    """Every partial aggregate row, sorted: what two runtimes must agree on exactly."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT metric, resolution, window_s, cell,"
            " (extract(epoch FROM window_start) * 1000)::bigint, n, sum, min, max"
            " FROM window_partials ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
    return np.array(rows, dtype=object)


async def _group_lag(kafka_url: str, group: str, topics: list[str]) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # noqa: PLC0415

    servers = kafka_url.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        wanted = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(await topic_partitions(consumer, topic))
        ]
        ends = await consumer.end_offsets(wanted)
        lags = {
            f"{tp.topic}[{tp.partition}]": end - (committed[tp].offset if tp in committed else 0)
            for tp, end in ends.items()
        }
        return {name: lag for name, lag in lags.items() if lag}
    finally:
        await consumer.stop()
        await admin.close()


async def topic_partitions(consumer: Any, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return set(consumer.partitions_for_topic(topic) or ())


def group_lags(kafka_url: str, app_id: str) -> dict[str, int]:
    """Messages not yet committed by the workers' group, by ``topic[partition]``."""
    import asyncio  # noqa: PLC0415

    return asyncio.run(_group_lag(kafka_url, app_id, [f"{app_id}.readings", f"{app_id}.enriched"]))


def wait_caught_up(kafka_url: str, app_id: str, *, timeout_s: float = 60.0) -> None:
    """Until the workers' consumer group has committed every message of both topics."""
    import asyncio  # noqa: PLC0415

    topics = [f"{app_id}.readings", f"{app_id}.enriched"]
    deadline = time.monotonic() + timeout_s
    lags = asyncio.run(_group_lag(kafka_url, app_id, topics))
    while lags and time.monotonic() < deadline:
        time.sleep(0.5)
        lags = asyncio.run(_group_lag(kafka_url, app_id, topics))
    assert not lags, f"the workers left messages uncommitted: {lags}"


def missing_frames(url: str, reference_url: str) -> list[tuple[int, int, int]]:
    """(kit, boot, seq) of the frames stored in ``reference_url`` but not in ``url``."""

    def frames(u: str) -> set[tuple[int, int, int]]:
        with psycopg.connect(u, autocommit=True) as conn:
            return {
                tuple(r)
                for r in conn.execute(  # type: ignore[misc]
                    "SELECT DISTINCT kit_id, boot_id, seq FROM readings"
                ).fetchall()
            }

    return sorted(frames(reference_url) - frames(url))
