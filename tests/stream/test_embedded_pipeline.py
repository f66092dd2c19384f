"""The embedded runtime's overlapping stages: batch N+1 is prepared while batch N is written
(and, when full, written beside it by a second writer), and still nothing is acknowledged
before its own commit, nor before an earlier batch's.

Real Mosquitto and PostgreSQL. To hold a write in the middle of its transaction,
the test takes an EXCLUSIVE lock on ``readings`` (reads still work) and releases
it, or kills the writer's session, or stops the server. The runtime is traced,
not mocked: the real sink's ``write`` and the real subscriber's ``ack`` are
wrapped to record when a batch's transaction returned (committed) and when its
messages were acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import psycopg
import pytest

from bikesense.runtimes import EmbeddedConfig, EmbeddedRuntime
from bikesense.services import PostgresCluster
from firmware_protocol import empty_readings, encode_readings
from ingest.keys import KeyCache
from ingest.mqtt import InboundMessage
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.privacy import PrivacyConfig
from stream.core.process import CoreConfig
from stream.embedded import DatabaseHandler, PreparedBatch
from tests.runtime_harness import scalar, started, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

PER_FRAME = 10
WRITER = "bikesense-stream"  # the sink's application_name


Batch = tuple[int, ...]


class TracedRuntime(EmbeddedRuntime):
    """The embedded runtime, recording what happens to its chunks and batches.

    The prepare stage's chunks are numbered from 0 as they are prepared; a batch
    is the tuple of the chunks it joined. Events: ``prepared`` (a chunk, as a
    1-tuple), then per batch ``write`` (its transaction began), ``committed`` (the
    sink returned), ``failed`` (a database error), ``acked``; and ``keys failed``
    (an empty tuple) when reading the kit keys met a database error.
    """

    def __init__(self, config: EmbeddedConfig, master_key: MasterKey) -> None:
        super().__init__(config, master_key)
        self.events: list[tuple[str, Batch]] = []
        #: Each chunk's messages and what the handler prepared of them.
        self.chunks: list[tuple[list[InboundMessage], PreparedBatch]] = []
        self._lock = threading.Lock()
        self._current = threading.local()  # the batch each write-stage thread is writing
        self._writer_threads: list[str] = []
        consumer, handler = self.consumer, self.handler
        assert isinstance(handler, DatabaseHandler)
        subscriber_ack = consumer.subscriber.ack
        key_reader = self.key_reader
        prepare = consumer._prepare
        commit = handler.commit

        def traced_write(sink_write: Any) -> Any:
            def write(admitted: Any, rows: Any, states: Any = None, plan: Any = None) -> Any:
                batch = self._current.batch
                with self._lock:
                    self._writer_threads.append(threading.current_thread().name)
                self._log("write", batch)
                try:
                    outcome = sink_write(admitted, rows, states, plan)
                except psycopg.OperationalError:
                    self._log("failed", batch)
                    raise
                self._log("committed", batch)
                return outcome

            return write

        def ack(messages: Sequence[InboundMessage]) -> int:
            self._log("acked", self._batch_of(messages))
            return subscriber_ack(messages)

        log = self._log

        class TracedKeys:
            def load(self) -> Any:
                return self._traced(key_reader.load)

            def load_some(self, kit_ids: Any) -> Any:
                return self._traced(lambda: key_reader.load_some(kit_ids))

            @staticmethod
            def _traced(read: Any) -> Any:
                try:
                    return read()
                except psycopg.OperationalError:
                    log("keys failed", ())
                    raise

        def traced_aggregate(sink: Any) -> Any:
            aggregate = sink._aggregate

            def traced(rows: Any) -> Any:
                # A writer aggregates on its own sink, whose connection tells whether it is
                # in its transaction; the prepare stage (readying a batch) writes on none.
                thread = threading.current_thread().name
                conn = sink._conn if thread.startswith("bikesense-write") else None
                where = (
                    "inside"
                    if conn is not None
                    and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                    else "outside"
                )
                self._log(
                    f"aggregated in {threading.current_thread().name}, {where} a transaction", ()
                )
                return aggregate(rows)

            return traced

        def traced_prepare(messages: list[InboundMessage]) -> Any:
            chunk = prepare(messages)
            if chunk is not None:
                with self._lock:
                    self.chunks.append((messages, chunk.prepared))
                self._log("prepared", (len(self.chunks) - 1,))
            return chunk

        def traced_commit(batch: PreparedBatch, writer: int) -> Any:
            self._current.batch = self._batch_of_readings(batch)
            return commit(batch, writer)

        for sink in handler.sinks:
            sink._aggregate = traced_aggregate(sink)
            sink.write = traced_write(sink.write)  # type: ignore[method-assign]
        consumer.subscriber.ack = ack  # type: ignore[method-assign]
        consumer.keys = KeyCache(TracedKeys())
        consumer._prepare = traced_prepare  # type: ignore[method-assign]
        handler.commit = traced_commit  # type: ignore[method-assign]

    def _batch_of(self, messages: Sequence[InboundMessage]) -> Batch:
        with self._lock:
            return tuple(
                i
                for i, (chunk, _) in enumerate(self.chunks)
                if any(m is chunk[0] for m in messages)
            )

    def _batch_of_readings(self, batch: PreparedBatch) -> Batch:
        """The chunks whose readings ``batch`` holds (readings are unique by their key)."""
        readings = {r.tobytes() for r in batch.admitted.readings}
        with self._lock:
            return tuple(
                i
                for i, (_, chunk) in enumerate(self.chunks)
                if chunk.admitted.readings[:1].tobytes() in readings
            )

    def _log(self, event: str, batch: Batch) -> None:
        with self._lock:
            self.events.append((event, batch))

    def seen_threads(self) -> set[str]:
        """The write-stage threads that wrote a batch."""
        with self._lock:
            return set(self._writer_threads)

    def seen(self, event: str) -> list[Batch]:
        with self._lock:
            return [b for e, b in self.events if e == event]

    def prepared(self) -> list[int]:
        return [n for (n,) in self.seen("prepared")]

    def acked_chunks(self) -> list[int]:
        return [n for batch in self.seen("acked") for n in batch]

    def at(self, event: str, batch: Batch) -> int:
        """Where in the event log ``event`` first happened to ``batch``."""
        with self._lock:
            return self.events.index((event, batch))

    def counter(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(f"{name}_total") or 0.0

    def kits_of(self, chunk: int) -> set[int]:
        with self._lock:
            return {int(k) for k in self.chunks[chunk][1].rows["kit_id"]}


def _frame(kit: int, seq: int, secret: bytes, lat_deg: float | None = None) -> bytes:
    start_ms = int(time.time() * 1000) - 600_000 + seq * PER_FRAME * 1000
    r = empty_readings(PER_FRAME)
    r["ts_ms"] = start_ms + np.arange(PER_FRAME) * 1000
    lat0 = 52.09 + kit * 1e-3 if lat_deg is None else lat_deg
    r["lat_deg"] = lat0 + np.arange(PER_FRAME) * 1e-5
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

    def publish(self, kit: int, seq: int, lat_deg: float | None = None) -> None:
        with MqttPublisher(self.mqtt_url, topic_root=self.root) as publisher:
            publisher.publish(
                f"{self.root}/kits/{kit}/up", _frame(kit, seq, self.secrets[kit], lat_deg)
            )
        self.published += PER_FRAME

    def config(self, client_id: str, **overrides: Any) -> EmbeddedConfig:
        settings: dict[str, Any] = {
            "retry_min_s": 0.05,
            "retry_max_s": 0.2,
            "maintenance": None,
            **overrides,
        }
        return EmbeddedConfig(
            mqtt_url=self.mqtt_url,
            database_url=self.url,
            client_id=client_id,
            topic_root=self.root,
            **settings,
        )

    def stored(self) -> int:
        return int(scalar(self.url, "SELECT count(*) FROM readings"))

    def assert_exactly_once(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
            ).fetchone()
        assert row == (self.published, self.published)


@pytest.fixture
def fleet(migrated_database_url: str, mqtt_url: str, unique_topic_prefix: str) -> Fleet:
    return Fleet(migrated_database_url, mqtt_url, f"{unique_topic_prefix}/bikesense/v1", (1, 2, 3))


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
    return bool(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (WRITER,),
        )
    )


def assert_acks_follow_commits(runtime: TracedRuntime) -> None:
    """Every acked batch committed first, and batches are written and acked in order."""
    acked = runtime.seen("acked")
    assert runtime.acked_chunks() == list(range(len(runtime.acked_chunks())))
    assert [b for b in runtime.seen("committed") if b in acked] == acked
    for i, batch in enumerate(acked):
        assert runtime.at("committed", batch) < runtime.at("acked", batch)
        if i > 0:
            assert runtime.at("acked", acked[i - 1]) < runtime.at("write", batch)


def test_the_next_batch_is_prepared_during_a_write_and_acked_only_after_it(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    # Each batch merges its own aggregates here (no delay): where they are computed is
    # what the end of the test looks at (merged over several batches:
    # tests/stream/test_deferred_aggregates.py).
    runtime = TracedRuntime(
        fleet.config(
            f"{unique_topic_prefix}-ingest",
            max_batch_messages=2,
            writers=1,
            aggregate_delay_s=0.0,
        ),
        fleet.master,
    )
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)  # chunk 0, written alone: its write waits for the lock
            wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
            fleet.publish(2, 0)  # chunks 1 and 2: the next batch, prepared meanwhile
            wait_for(lambda: runtime.prepared() == [0, 1], what="chunk 1 prepared")
            fleet.publish(3, 0)
            wait_for(lambda: runtime.prepared() == [0, 1, 2], what="chunk 2 prepared")
            fleet.publish(1, 1)  # no room: the next batch holds max_batch_messages
            time.sleep(1.0)
            assert runtime.prepared() == [0, 1, 2]
            assert runtime.seen("write") == [(0,)]
            assert runtime.seen("committed") == runtime.seen("acked") == []
        wait_for(lambda: runtime.acked_chunks() == [0, 1, 2, 3], what="every chunk acked")
    assert runtime.seen("acked") == [(0,), (1, 2), (3,)]
    assert [runtime.kits_of(n) for n in range(4)] == [{1}, {2}, {3}, {1}]
    assert_acks_follow_commits(runtime)
    assert runtime.at("prepared", (2,)) < runtime.at("committed", (0,))
    # Every reading was new, so each batch was aggregated once, before its transaction
    # (the batch of two chunks as one), none inside one: batches (0,) and (3,) by the
    # write stage, and (1, 2), full while (0,)'s write was blocked, by the prepare stage
    # meanwhile (readied for its writer).
    by_writer = "aggregated in bikesense-write, outside a transaction"
    by_preparer = "aggregated in bikesense-prepare, outside a transaction"
    assert [e for e, _ in runtime.events if e.startswith("aggregated")] == [
        by_writer,
        by_preparer,
        by_writer,
    ]
    assert runtime.at(by_preparer, ()) < runtime.at("committed", (0,))
    assert runtime.counter("bikesense_mqtt_messages_acked") == 4
    fleet.assert_exactly_once()


def test_without_overlap_the_stages_take_turns(fleet: Fleet, unique_topic_prefix: str) -> None:
    runtime = TracedRuntime(
        fleet.config(f"{unique_topic_prefix}-ingest", overlap_stages=False), fleet.master
    )
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
            fleet.publish(2, 0)
            time.sleep(1.0)
            assert runtime.prepared() == [0]
        wait_for(lambda: runtime.acked_chunks() == [0, 1], what="both batches acked")
    assert runtime.seen("acked") == [(0,), (1,)]
    assert_acks_follow_commits(runtime)
    assert runtime.at("acked", (0,)) < runtime.at("prepared", (1,))
    fleet.assert_exactly_once()


@contextmanager
def kit_row_locked(url: str, kit: int) -> Iterator[None]:
    """Hold kit ``kit``'s row locked until the block ends: a write of that kit's readings
    waits at the end of its transaction (recording when the kit was last seen)."""
    conn = psycopg.connect(url)
    conn.execute("SELECT FROM kits WHERE kit_id = %s FOR UPDATE", (kit,))
    try:
        yield
    finally:
        with suppress(psycopg.OperationalError):
            conn.commit()
        conn.close()


#: Far enough north of the other kits that no H3 cell of the default resolutions is
#: shared: the writes of kit 1 and of the others lock no row in common but the kits'.
FAR_LAT = 53.5


def two_writes_in_flight(runtime: TracedRuntime, fleet: Fleet) -> None:
    """Batch (0,) (kit 1) held at its end by the test's lock on kit 1; batch (1, 2)
    (kits 2 and 3) full, so taken by the second writer and committed meanwhile."""
    fleet.publish(1, 0, lat_deg=FAR_LAT)
    wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
    fleet.publish(2, 0)
    fleet.publish(3, 0)
    wait_for(lambda: runtime.seen("committed") == [(1, 2)], what="batch (1, 2) committed")
    time.sleep(0.5)
    assert runtime.seen("write") == [(0,), (1, 2)]
    assert runtime.seen("acked") == []  # not before batch (0,), which has not committed


def test_a_second_writer_takes_a_full_batch_and_acks_wait_for_the_batch_before(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    runtime = TracedRuntime(
        fleet.config(f"{unique_topic_prefix}-ingest", max_batch_messages=2, batch_wait_s=60.0),
        fleet.master,
    )
    assert runtime.config.writers == 2
    with started(runtime):
        with kit_row_locked(fleet.url, 1):
            two_writes_in_flight(runtime, fleet)
        wait_for(lambda: runtime.acked_chunks() == [0, 1, 2], what="every chunk acked")
    assert runtime.seen("acked") == [(0,), (1, 2)]
    assert runtime.seen("committed") == [(1, 2), (0,)]
    assert runtime.at("committed", (0,)) < runtime.at("acked", (0,)) < runtime.at("acked", (1, 2))
    assert runtime.seen_threads() == {"bikesense-write", "bikesense-write-2"}
    # Batch (1, 2) waited for its turn to be acked; what the operator sees of it.
    assert runtime.counter("bikesense_ack_turn_waits") == 1
    registry = runtime.metrics.registry
    assert registry.get_sample_value("bikesense_batch_write_seconds_count") == 2
    assert registry.get_sample_value("bikesense_batch_messages_sum") == 3
    assert registry.get_sample_value("bikesense_writes_in_flight") == 0
    fleet.assert_exactly_once()


def test_a_second_writer_takes_a_batch_that_has_waited_batch_wait_s(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    runtime = TracedRuntime(
        fleet.config(f"{unique_topic_prefix}-ingest", batch_wait_s=0.3), fleet.master
    )
    with started(runtime):
        with kit_row_locked(fleet.url, 1):
            fleet.publish(1, 0, lat_deg=FAR_LAT)
            wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
            fleet.publish(2, 0)
            # Far from full (max_batch_messages is 1,000), written all the same.
            wait_for(lambda: runtime.seen("committed") == [(1,)], what="batch (1,) committed")
            assert runtime.seen("acked") == []
        wait_for(lambda: runtime.acked_chunks() == [0, 1], what="both batches acked")
    assert runtime.seen("acked") == [(0,), (1,)]
    fleet.assert_exactly_once()


def test_a_later_batch_committed_stays_unacked_when_the_batch_before_fails(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    client_id = f"{unique_topic_prefix}-ingest"
    runtime = TracedRuntime(
        fleet.config(client_id, max_batch_messages=2, batch_wait_s=60.0), fleet.master
    )
    with started(runtime) as request_stop, kit_row_locked(fleet.url, 1):
        two_writes_in_flight(runtime, fleet)
        request_stop()
        time.sleep(0.3)
        # Batch (0,)'s write fails after the stop request, so it is not retried ...
        scalar(
            fleet.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (WRITER,),
        )
    # ... and batch (1, 2), committed, may not be acked before it: nothing is.
    assert runtime.seen("failed") == [(0,)]
    assert runtime.seen("acked") == []
    assert fleet.stored() == 2 * PER_FRAME
    # The broker gives all three frames to the next process with this session: kit 1's
    # readings are stored, the others' are already there and change nothing.
    again = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(again):
        wait_for(lambda: fleet.stored() == fleet.published, what="kit 1's frame redelivered")
        wait_for(
            lambda: again.counter("bikesense_mqtt_messages_acked") == 3,
            what="all three frames acked",
        )
    assert again.counter("bikesense_readings_duplicate") == 2 * PER_FRAME
    fleet.assert_exactly_once()


def test_stop_during_a_write_that_fails_acks_nothing_and_loses_nothing(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    client_id = f"{unique_topic_prefix}-ingest"
    runtime = TracedRuntime(fleet.config(client_id, batch_wait_s=60.0), fleet.master)
    with started(runtime) as request_stop, readings_locked(fleet.url):
        fleet.publish(1, 0)
        wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
        fleet.publish(2, 0)
        wait_for(lambda: runtime.prepared() == [0, 1], what="the next batch prepared")
        request_stop()
        time.sleep(0.3)
        # The write in hand fails after the stop request: it is not retried.
        scalar(
            fleet.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (WRITER,),
        )
    assert runtime.seen("write") == runtime.seen("failed") == [(0,)]
    assert runtime.seen("committed") == runtime.seen("acked") == []
    assert fleet.stored() == 0
    # Nothing was acked: the broker gives both frames to the next process with this session.
    again = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(again):
        wait_for(lambda: fleet.stored() == fleet.published, what="both frames redelivered")
    assert_acks_follow_commits(again)
    fleet.assert_exactly_once()


def test_stop_during_a_write_finishes_it_and_leaves_the_next_batch_unacked(
    fleet: Fleet,
    unique_topic_prefix: str,
) -> None:
    client_id = f"{unique_topic_prefix}-ingest"
    runtime = TracedRuntime(fleet.config(client_id, batch_wait_s=60.0), fleet.master)
    with started(runtime) as request_stop:
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
            fleet.publish(2, 0)
            wait_for(lambda: runtime.prepared() == [0, 1], what="the next batch prepared")
            request_stop()
            time.sleep(0.3)
        wait_for(lambda: runtime.seen("acked") == [(0,)], what="the write in hand committed")
    # The batch prepared behind it was never written, so never acked.
    assert runtime.seen("write") == runtime.seen("committed") == [(0,)]
    assert_acks_follow_commits(runtime)
    assert fleet.stored() == PER_FRAME
    again = TracedRuntime(fleet.config(client_id), fleet.master)
    with started(again):
        wait_for(lambda: fleet.stored() == fleet.published, what="the second frame redelivered")
        time.sleep(0.5)  # anything redelivered twice would land now
    assert [again.kits_of(n) for n in again.acked_chunks()] == [{2}]
    fleet.assert_exactly_once()


def test_database_outage_while_the_next_batch_is_prepared(
    pg_cluster: PostgresCluster | None,
    fleet: Fleet,
    unique_topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if pg_cluster is None:
        pytest.skip("needs the harness's own PostgreSQL to stop and start it")
    # The next batch stays next: no second writer takes it for waiting (its own test).
    runtime = TracedRuntime(
        fleet.config(f"{unique_topic_prefix}-ingest", batch_wait_s=60.0), fleet.master
    )
    with started(runtime):
        with readings_locked(fleet.url):
            fleet.publish(1, 0)
            wait_for(lambda: writer_blocked(fleet.url), what="batch (0,)'s write to block")
            fleet.publish(2, 0)
            wait_for(lambda: runtime.prepared() == [0, 1], what="the next batch prepared")
            # A kit registered after the key cache was loaded: admitting its frame must
            # read the database, which is about to go away.
            fleet.register(4)
            pg_cluster.stop(mode="immediate")
        try:
            fleet.publish(4, 0)
            time.sleep(2.0)
            # The write of batch (0,) is retried; the next batch waits; kit 4's frame is
            # admitted again and again in the prepare stage meanwhile.
            assert runtime.seen("failed")[:1] == [(0,)]
            assert set(runtime.seen("write")) == {(0,)}
            assert runtime.seen("keys failed")
            assert runtime.prepared() == [0, 1]
            assert runtime.seen("committed") == runtime.seen("acked") == []
        finally:
            pg_cluster.start()
        wait_for(lambda: fleet.stored() == fleet.published, what="every frame after the outage")
        wait_for(lambda: runtime.acked_chunks() == [0, 1, 2], what="every chunk acked")
    assert [runtime.kits_of(n) for n in range(3)] == [{1}, {2}, {4}]
    assert_acks_follow_commits(runtime)
    assert runtime.at("prepared", (1,)) < runtime.at("committed", (0,))
    assert "database unavailable" in caplog.text
    assert runtime.counter("bikesense_database_errors") >= 2
    fleet.assert_exactly_once()


@pytest.mark.parametrize(
    ("overrides", "writers"),
    [
        ({}, 2),
        ({"writers": 3}, 3),
        ({"writers": 3, "overlap_stages": False}, 1),
        ({"core": CoreConfig(privacy=PrivacyConfig(trim_end_s=60.0))}, 1),
    ],
)
def test_how_many_writers(fleet: Fleet, overrides: dict[str, Any], writers: int) -> None:
    """Stages in turn, and end-of-ride trimming (a batch's transaction reads what the
    batch before held back), keep one writer."""
    runtime = EmbeddedRuntime(fleet.config("writers", **overrides), fleet.master)
    assert isinstance(runtime.handler, DatabaseHandler)
    assert len(runtime.handler.sinks) == runtime.consumer.writers == writers


def test_writers_must_be_at_least_one(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="writers must be at least 1"):
        fleet.config("no-writer", writers=0)
