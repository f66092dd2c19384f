"""The embedded runtime's two overlapping stages: batch N+1 is prepared while batch N is written,
and still nothing is acknowledged before its own commit, nor before an earlier batch's.

Real Mosquitto and PostgreSQL. To hold a write in the middle of its transaction,
the test takes an EXCLUSIVE lock on ``readings`` (reads still work) and releases
it, or kills the writer's session, or stops the server. The runtime is traced,
not mocked: the real sink's ``write`` and the real subscriber's ``ack`` are
wrapped to record when a batch's transaction returned (committed) and when its
messages were acknowledged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import psycopg
import pytest

from bikesense.services import PostgresCluster
from firmware_protocol import empty_readings, encode_readings
from ingest.keys import KeyCache
from ingest.mqtt import InboundMessage
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.embedded import EmbeddedConfig, EmbeddedRuntime, PreparedBatch
from tests.runtime_harness import scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

PER_FRAME = 10
WRITER = "bikesense-stream"  # the sink's application_name


class TracedRuntime(EmbeddedRuntime):
    """The embedded runtime, recording ``(event, batch number)`` as its batches move on.

    Events: ``prepared`` (admitted and processed), ``write`` (its transaction began),
    ``committed`` (the sink returned), ``failed`` (a database error), ``acked``; and
    ``keys failed`` (batch -1) when reading the kit keys met a database error.
    Batch numbers count prepared batches from 0.
    """

    def __init__(self, config: EmbeddedConfig, master_key: MasterKey) -> None:
        super().__init__(config, master_key)
        self.events: list[tuple[str, int]] = []
        self.batches: list[PreparedBatch] = []
        self._lock = threading.Lock()
        sink_write, subscriber_ack = self._sink.write, self._subscriber.ack
        load_keys = self._key_reader.load

        def write(admitted: Any, rows: Any, states: Any = None) -> Any:
            n = self._number(lambda b: b.admitted is admitted)
            self._log("write", n)
            try:
                outcome = sink_write(admitted, rows, states)
            except psycopg.OperationalError:
                self._log("failed", n)
                raise
            self._log("committed", n)
            return outcome

        def ack(messages: list[InboundMessage]) -> int:
            self._log("acked", self._number(lambda b: b.messages is messages))
            return subscriber_ack(messages)

        def keys() -> Any:
            try:
                return load_keys()
            except psycopg.OperationalError:
                self._log("keys failed", -1)
                raise

        self._sink.write = write  # type: ignore[method-assign]
        self._subscriber.ack = ack  # type: ignore[method-assign]
        self._keys = KeyCache(keys)

    def _prepare(self, batch: list[InboundMessage]) -> PreparedBatch | None:
        prepared = super()._prepare(batch)
        if prepared is not None:
            with self._lock:
                self.batches.append(prepared)
            self._log("prepared", len(self.batches) - 1)
        return prepared

    def _number(self, match: Callable[[PreparedBatch], bool]) -> int:
        with self._lock:
            return next(i for i, b in enumerate(self.batches) if match(b))

    def _log(self, event: str, n: int) -> None:
        with self._lock:
            self.events.append((event, n))

    def seen(self, event: str) -> list[int]:
        with self._lock:
            return [n for e, n in self.events if e == event]

    def at(self, event: str, n: int) -> int:
        """Where in the event log ``event`` first happened to batch ``n``."""
        with self._lock:
            return self.events.index((event, n))

    def counter(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(f"{name}_total") or 0.0

    def kits_of(self, n: int) -> set[int]:
        with self._lock:
            return {int(k) for k in self.batches[n].rows["kit_id"]}


@contextmanager
def started(runtime: EmbeddedRuntime) -> Iterator[Callable[[], None]]:
    """Run ``runtime`` in a thread; yields a function that asks it to stop (not waiting)."""
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(runtime.run(stop))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            loop.close()

    def request_stop() -> None:
        with suppress(RuntimeError):  # the loop already closed: it has stopped
            loop.call_soon_threadsafe(stop.set)

    thread = threading.Thread(target=main, name="traced-runtime", daemon=True)
    thread.start()
    try:
        assert runtime.ready.wait(30), "the runtime did not subscribe within 30 s"
        yield request_stop
    finally:
        request_stop()
        thread.join(30)
        assert not thread.is_alive(), "the runtime did not stop within 30 s"
    if errors:
        raise errors[0]


def _frame(kit: int, seq: int, secret: bytes) -> bytes:
    start_ms = int(time.time() * 1000) - 600_000 + seq * PER_FRAME * 1000
    r = empty_readings(PER_FRAME)
    r["ts_ms"] = start_ms + np.arange(PER_FRAME) * 1000
    r["lat_deg"] = 52.09 + kit * 1e-3 + np.arange(PER_FRAME) * 1e-5
    r["lon_deg"] = 5.12
    r["gnss_fix"], r["hdop"], r["speed_mps"], r["interval_ms"] = 2, 1.0, 4.0, 1000
    r["pm25_ugm3"] = 8.0 + np.arange(PER_FRAME) % 7 * 0.4
    return encode_readings(kit, 1, seq, r, secret)


class Fleet:
    def __init__(self, url: str, mqtt_url: str, root: str, kits: tuple[int, ...]) -> None:
        self.url, self.mqtt_url, self.root = url, mqtt_url, root
        self.master = MasterKey.generate()
        self.secrets: dict[int, bytes] = {}
        for kit in kits:
            self.register(kit)
        self.published = 0

    def register(self, kit: int) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.secrets[kit] = register_kit(conn, self.master, kit).secret

    def publish(self, kit: int, seq: int) -> None:
        with MqttPublisher(self.mqtt_url, topic_root=self.root) as publisher:
            publisher.publish(f"{self.root}/kits/{kit}/up", _frame(kit, seq, self.secrets[kit]))
        self.published += PER_FRAME

    def config(self, client_id: str, **overrides: Any) -> EmbeddedConfig:
        settings: dict[str, Any] = {"retry_min_s": 0.05, "retry_max_s": 0.2,
                                    "maintenance": None, **overrides}
        return EmbeddedConfig(mqtt_url=self.mqtt_url, database_url=self.url,
                              client_id=client_id, topic_root=self.root, **settings)

    def stored(self) -> int:
        return int(scalar(self.url, "SELECT count(*) FROM readings"))

    def assert_exactly_once(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx))"
                               " FROM readings").fetchone()
        assert row == (self.published, self.published)


@pytest.fixture
def fleet(migrated_database_url: str, mqtt_url: str, unique_topic_prefix: str) -> Fleet:
    return Fleet(migrated_database_url, mqtt_url, f"{unique_topic_prefix}/bikesense/v1",
                 (1, 2, 3))


@contextmanager
def readings_locked(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold an EXCLUSIVE lock on ``readings`` until the block ends (or the server goes)."""
    conn = psycopg.connect(url)
    conn.execute("LOCK TABLE readings IN EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        with suppress(psycopg.OperationalError):
            conn.commit()
        conn.close()


def writer_blocked(url: str) -> bool:
    return bool(scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                            " AND wait_event_type = 'Lock'", (WRITER,)))


def assert_acks_follow_commits(runtime: TracedRuntime) -> None:
    """Every acked batch committed first, and batches commit and ack in batch order."""
    acked, committed = runtime.seen("acked"), runtime.seen("committed")
    assert acked == sorted(acked) == list(range(len(acked)))
    assert committed == sorted(committed)
    for n in acked:
        assert runtime.at("committed", n) < runtime.at("acked", n)
        if n > 0:
            assert runtime.at("acked", n - 1) < runtime.at("write", n)


def test_the_next_batch_is_prepared_during_a_write_and_acked_only_after_it(
    fleet: Fleet, unique_topic_prefix: str,
) -> None:
    runtime = TracedRuntime(fleet.config(f"{unique_topic_prefix}-ingest"), fleet.master)
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)  # batch 0: its write waits for the lock
            wait_for(lambda: writer_blocked(fleet.url), what="batch 0's write to block")
            fleet.publish(2, 0)  # batch 1: prepared while batch 0 is being written
            wait_for(lambda: runtime.seen("prepared") == [0, 1],
                     what="batch 1 prepared during batch 0's write")
            fleet.publish(3, 0)  # no slot for it: one batch written, one ready
            time.sleep(1.0)
            assert runtime.seen("prepared") == [0, 1]
            assert runtime.seen("write") == [0]
            assert runtime.seen("committed") == runtime.seen("acked") == []
        wait_for(lambda: runtime.seen("acked") == [0, 1, 2], what="all three batches acked")
    assert [runtime.kits_of(n) for n in range(3)] == [{1}, {2}, {3}]
    assert_acks_follow_commits(runtime)
    assert runtime.at("prepared", 1) < runtime.at("committed", 0)
    assert runtime.counter("bikesense_mqtt_messages_acked") == 3
    fleet.assert_exactly_once()


def test_depth_one_runs_the_stages_in_turn(fleet: Fleet, unique_topic_prefix: str) -> None:
    runtime = TracedRuntime(fleet.config(f"{unique_topic_prefix}-ingest", pipeline_depth=1),
                            fleet.master)
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch 0's write to block")
            fleet.publish(2, 0)
            time.sleep(1.0)
            assert runtime.seen("prepared") == [0]
        wait_for(lambda: runtime.seen("acked") == [0, 1], what="both batches acked")
    assert_acks_follow_commits(runtime)
    assert runtime.at("acked", 0) < runtime.at("prepared", 1)
    fleet.assert_exactly_once()


def test_stop_during_a_write_that_fails_acks_nothing_and_loses_nothing(
    fleet: Fleet, unique_topic_prefix: str,
) -> None:
    client_id = f"{unique_topic_prefix}-ingest"
    runtime = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(runtime) as request_stop, readings_locked(fleet.url):
        fleet.publish(1, 0)
        wait_for(lambda: writer_blocked(fleet.url), what="batch 0's write to block")
        fleet.publish(2, 0)
        wait_for(lambda: runtime.seen("prepared") == [0, 1], what="batch 1 ready")
        request_stop()
        time.sleep(0.3)
        # The write in hand fails after the stop request: it is not retried.
        scalar(fleet.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = %s", (WRITER,))
    assert runtime.seen("write") == [0]
    assert runtime.seen("failed") == [0]
    assert runtime.seen("committed") == runtime.seen("acked") == []
    assert fleet.stored() == 0
    # Nothing was acked: the broker gives both frames to the next process with this session.
    again = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(again):
        wait_for(lambda: fleet.stored() == fleet.published, what="both frames redelivered")
    assert_acks_follow_commits(again)
    fleet.assert_exactly_once()


def test_stop_during_a_write_finishes_it_and_leaves_the_ready_batch_unacked(
    fleet: Fleet, unique_topic_prefix: str,
) -> None:
    client_id = f"{unique_topic_prefix}-ingest"
    runtime = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(runtime) as request_stop:
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch 0's write to block")
            fleet.publish(2, 0)
            wait_for(lambda: runtime.seen("prepared") == [0, 1], what="batch 1 ready")
            request_stop()
            time.sleep(0.3)
        wait_for(lambda: runtime.seen("acked") == [0], what="the write in hand committed")
    # The batch ready behind it was never written, so never acked.
    assert runtime.seen("write") == runtime.seen("committed") == [0]
    assert_acks_follow_commits(runtime)
    assert fleet.stored() == PER_FRAME
    again = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(again):
        wait_for(lambda: fleet.stored() == fleet.published, what="batch 1 redelivered")
        time.sleep(0.5)  # anything redelivered twice would land now
    assert [again.kits_of(n) for n in again.seen("committed")] == [{2}]
    fleet.assert_exactly_once()


def test_database_outage_while_the_next_batch_is_prepared(
    pg_cluster: PostgresCluster | None, fleet: Fleet, unique_topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if pg_cluster is None:
        pytest.skip("needs the harness's own PostgreSQL to stop and start it")
    # One batch deeper than the default, so that a third batch is admitted during the outage.
    runtime = TracedRuntime(fleet.config(f"{unique_topic_prefix}-ingest", pipeline_depth=3),
                            fleet.master)
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch 0's write to block")
            fleet.publish(2, 0)
            wait_for(lambda: runtime.seen("prepared") == [0, 1], what="batch 1 ready")
            # A kit registered after the key cache was loaded: admitting its frame must
            # read the database, which is about to go away.
            fleet.register(4)
            pg_cluster.stop(mode="immediate")
        try:
            time.sleep(1.2)  # past the key cache's once-a-second limit on re-reads
            fleet.publish(4, 0)
            time.sleep(2.0)
            assert runtime.seen("failed")[:1] == [0]
            assert set(runtime.seen("write")) == {0}  # batch 0 retried, batch 1 waits
            assert runtime.seen("keys failed")  # batch 2's admission retried meanwhile
            assert runtime.seen("prepared") == [0, 1]
            assert runtime.seen("committed") == runtime.seen("acked") == []
        finally:
            pg_cluster.start()
        wait_for(lambda: fleet.stored() == fleet.published, what="every frame after the outage")
        wait_for(lambda: len(runtime.seen("acked")) == 3, what="three batches acked")
    assert [runtime.kits_of(n) for n in range(3)] == [{1}, {2}, {4}]
    assert_acks_follow_commits(runtime)
    assert runtime.at("prepared", 1) < runtime.at("committed", 0)
    assert "database unavailable" in caplog.text
    assert runtime.counter("bikesense_database_errors") >= 2
    fleet.assert_exactly_once()
