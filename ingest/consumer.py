"""The MQTT consumer: messages in, batches handed to a handler, acked after their commit.

asyncio drives it and keeps the event loop free for signals; the blocking work
runs in stage threads, so that the handler's commits and our preparation overlap
instead of taking turns:

- paho's thread converts each message and puts it on a queue bounded by count and
  by bytes (``ingest.message_queue``); when the queue is full it blocks
  (back-pressure: the broker holds the rest), never drops;
- the **prepare** stage takes messages off the queue, admits them (decode,
  authenticate, validate: ``ingest.admission``) and has the handler prepare them
  (:meth:`BatchHandler.prepare`), chunk after chunk, in arrival order; the
  prepared chunks add up to the *next batch*;
- ``writers`` **write** stage threads (the handler says how many) take the next
  batch and commit it (:meth:`BatchHandler.commit`); once that returns, its
  messages are acknowledged, in arrival order.

Which batch a writer takes, and when, and when it may acknowledge it, is the
hand-over state machine's to say (``ingest.handover``); this module keeps it
under one lock and waits on that lock's condition. The depth is bounded: the
batches being written and one being prepared, so at most
``(writers + 1) × max_batch_messages`` messages are between the queue and their
commit. A broker that enforces an in-flight window (``max_inflight_messages``)
must let it cover that, or the next batch cannot fill while one is being
written; Mosquitto 2.0.11 stops enforcing it after the first PUBACK (measured,
docs/ingest.md).

Delivery: a message is acknowledged only after the commit of its batch, and
never before the messages of an earlier batch. While a service is away (the
handler's ``unavailable`` errors; the database, for the kit keys admission
reads) the step is retried with back-off; the next batch fills up, the queue
fills, paho's thread blocks, and the broker holds the rest. On stop, the commits
in hand are finished (then acked) unless they are waiting out an outage; batches
not committed stay unacknowledged, and so does a batch committed after one that
was not. Kill the process at any point and the broker redelivers what was not
acked; the exactly-once writer ignores what had already been stored.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import psycopg

from ingest.admission import Admitted, admit, kits_named
from ingest.consumer_config import ConsumerConfig
from ingest.handler import BatchHandler
from ingest.handover import Handover, Taken, Turn
from ingest.keys import KeyCache, KeySource
from ingest.message_queue import MessageQueue
from ingest.metrics import RuntimeMetrics
from ingest.mqtt import InboundMessage, MqttSubscriber
from ingest.topics import TopicLayout
from stream.core.admitted import WriteOutcome

log = logging.getLogger(__name__)

B = TypeVar("B")
_T = TypeVar("_T")

#: How often a stage thread that waits looks at the stop flag.
_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class _Chunk(Generic[B]):
    """Messages and what the handler prepared of them."""

    messages: list[InboundMessage]
    prepared: B


class MqttConsumer(Generic[B]):
    """Consumes the kits' topics and drives ``handler`` (see the module docstring)."""

    def __init__(
        self,
        config: ConsumerConfig,
        handler: BatchHandler[B],
        keys: KeySource,
        *,
        name: str = "MQTT consumer",
    ) -> None:
        """``keys`` reads kits' keys (``ingest.keys.KitKeyReader``); ``name``
        is what the log calls this process's runtime."""
        self.config = config
        self.name = name
        self.handler = handler
        self.layout = TopicLayout(config.topic_root)
        self.metrics = RuntimeMetrics()
        #: Set once the subscriptions are in place: from then on nothing published is missed.
        self.subscribed = threading.Event()
        self.writers = handler.writers if config.overlap_stages else 1
        self._queue = MessageQueue(config.queue_size, config.queue_bytes)
        self._stopping = threading.Event()
        self.keys = KeyCache(keys)
        self._lock = threading.Condition()
        self._handover: Handover[_Chunk[B]] = Handover(
            max_messages=config.max_batch_messages,
            writers=self.writers,
            batch_wait_s=config.batch_wait_s,
            overlap=config.overlap_stages,
            ready_early=handler.readies_early,
        )
        self._failures: list[BaseException] = []
        self.subscriber = MqttSubscriber(
            config.mqtt_url,
            client_id=config.client_id,
            subscriptions=self.layout.subscriptions(config.share_group),
            deliver=self._deliver,
        )

    # paho's network thread -----------------------------------------------------------

    def _deliver(self, message: InboundMessage) -> None:
        """Block while the queue is full (back-pressure); give up only when stopping."""
        while not self._stopping.is_set():
            try:
                self._queue.put(message, timeout=_POLL_S)
            except queue.Full:
                self.metrics.backpressure_waits.inc()
                continue
            return

    # the prepare stage ----------------------------------------------------------------

    def _prepare_loop(self) -> None:
        while not self._stopping.is_set():
            if self._ready_full_batch():
                continue
            room = self._wait_for_room()
            if not room:
                continue
            messages = self._collect(room)
            if not messages:
                continue
            chunk = self._prepare(messages)
            if chunk is None:
                continue  # stopped during a database outage: the messages stay unacked
            with self._lock:
                self._handover.add(chunk, len(messages), time.monotonic())
                self._lock.notify_all()

    def _ready_full_batch(self) -> bool:
        """While the next batch is full and every writer is busy, ready it for its commit
        (:meth:`BatchHandler.ready`) instead of idling. True if it readied one."""
        with self._lock:
            if not self._handover.should_ready():
                return False
            chunks = self._handover.start_readying()
        try:
            joined = self._joined(chunks)
            readied = _Chunk(joined.messages, self.handler.ready(joined.prepared))
        except BaseException:
            # The chunks stay as they were (and the stage fails, stopping all).
            with self._lock:
                self._handover.abandon_readying()
                self._lock.notify_all()
            raise
        with self._lock:
            self._handover.finish_readying(readied)
            self._lock.notify_all()
        return True

    def _wait_for_room(self) -> int:
        """How many more messages the next batch may take; 0 after a while without room."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._handover.room() > 0 or self._stopping.is_set(), _POLL_S
            )
            return 0 if self._stopping.is_set() else self._handover.room()

    def _collect(self, limit: int) -> list[InboundMessage]:
        """Up to ``limit`` messages (and ``max_batch_bytes``): what the queue holds, and
        what comes within ``linger_s`` of the first, taken as many at a time as are there."""
        max_bytes = self.config.max_batch_bytes
        try:
            batch = self._queue.get_many(limit, max_bytes, timeout=_POLL_S)
        except queue.Empty:
            return []
        size = sum(m.size_bytes for m in batch)
        deadline = time.monotonic() + self.config.linger_s
        while len(batch) < limit and size < max_bytes:
            remaining = deadline - time.monotonic()
            try:
                more = self._queue.get_many(
                    limit - len(batch), max_bytes - size, timeout=max(remaining, 0.0)
                )
            except queue.Empty:
                break
            batch += more
            size += sum(m.size_bytes for m in more)
        return batch

    def _prepare(self, messages: list[InboundMessage]) -> _Chunk[B] | None:
        """Admit and prepare messages; None if asked to stop while the database (the kit
        keys: a kit not in the key cache is looked up) was away."""
        admitted = self._with_retries(lambda: self._admit(messages), len(messages))
        if admitted is None:
            return None
        return _Chunk(messages, self.handler.prepare(admitted))

    def _admit(self, messages: list[InboundMessage]) -> Admitted:
        self.keys.confirm(kits_named(messages, self.layout))
        return admit(messages, self.layout, self.keys.lookup, self.config.rules)

    def _joined(self, chunks: Sequence[_Chunk[B]]) -> _Chunk[B]:
        if len(chunks) == 1:
            return chunks[0]
        return _Chunk(
            [m for c in chunks for m in c.messages], self.handler.join([c.prepared for c in chunks])
        )

    # the write stage ------------------------------------------------------------------

    def _write_loop(self, writer: int) -> None:
        while not self._stopping.is_set():
            taken = self._take_next()
            if taken is None:
                if not self._stopping.is_set():
                    self._idle(writer)
                continue
            number, chunks = taken.number, taken.chunks
            acked = False
            try:
                started = time.monotonic()
                batch = self._joined(chunks)
                outcome = self._with_retries(
                    partial(self.handler.commit, batch.prepared, writer), len(batch.messages)
                )
                if outcome is None:
                    return  # stopped during an outage: left unacked
                acked = self._acknowledge_in_turn(number, batch.messages, outcome)
                elapsed = time.monotonic() - started
                self.metrics.batch_seconds.observe(elapsed)
                self.metrics.batch_messages.observe(len(batch.messages))
                log.debug(
                    "batch of %d messages committed and %s in %.3f s (%d readings new, "
                    "%d partial rows merged)",
                    len(batch.messages),
                    "acked" if acked else "left unacked (an earlier batch was not)",
                    elapsed,
                    outcome.inserted,
                    outcome.partials_merged,
                )
            finally:
                with self._lock:
                    self._handover.finished(acked=acked)
                    self.metrics.writes_in_flight.set(self._handover.writing)
                    self._lock.notify_all()

    def _idle(self, writer: int) -> None:
        try:
            self.handler.idle(writer)
        except tuple(self.handler.unavailable) as exc:
            service = next(
                name for kind, name in self.handler.unavailable.items() if isinstance(exc, kind)
            )
            log.warning("%s unavailable while idle (%s); trying again later", service, exc)

    def _take_next(self) -> Taken[_Chunk[B]] | None:
        """Wait a while for a batch a writer may take, and take it; None if there is none,
        or when stopping (what was prepared then stays unacked, for the broker to resend)."""
        with self._lock:
            # Woken by the prepare stage and by writes ending; a batch's waiting time
            # runs out by itself, so look again by then.
            self._lock.wait_for(
                lambda: self._handover.can_take(time.monotonic()) or self._stopping.is_set(),
                self._handover.wait_s(time.monotonic(), _POLL_S),
            )
            if self._stopping.is_set() or not self._handover.can_take(time.monotonic()):
                return None
            taken = self._handover.take(time.monotonic())
            self.metrics.writes_in_flight.set(self._handover.writing)
            self._lock.notify_all()  # room again: the prepare stage starts the batch after
        return taken

    def _acknowledge_in_turn(
        self, number: int, messages: list[InboundMessage], outcome: WriteOutcome
    ) -> bool:
        """Ack batch ``number`` once every batch before it was acked; False (and no ack)
        if one of them ended unacked."""
        with self._lock:
            if self._handover.turn(number) is Turn.WAIT:
                self.metrics.ack_turn_waits.inc()
            self._lock.wait_for(lambda: self._handover.turn(number) is not Turn.WAIT)
            if self._handover.turn(number) is Turn.NEVER:
                return False
        self.metrics.messages_acked.inc(self.subscriber.ack(messages))
        self._count(outcome)
        with self._lock:
            self._handover.acked(number)
            self._lock.notify_all()
        return True

    def _count(self, outcome: WriteOutcome) -> None:
        admitted = outcome.admitted
        self.metrics.frames_accepted.inc(sum(admitted.frames_accepted.values()))
        for reason, count in admitted.frames_rejected.items():
            self.metrics.frames_rejected.labels(reason=reason).inc(count)
        self.metrics.readings_stored.inc(outcome.inserted)
        self.metrics.readings_duplicate.inc(outcome.duplicates)

    def _with_retries(self, step: Callable[[], _T], messages: int) -> _T | None:
        """``step()``, again with back-off while a service is away; None once stopping."""
        unavailable: dict[type[Exception], str] = {
            psycopg.OperationalError: "database",
            **self.handler.unavailable,
        }
        kinds: tuple[type[Exception], ...] = tuple(unavailable)
        delay = self.config.retry_min_s
        while True:
            try:
                return step()
            except kinds as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self.metrics.database_errors.inc()
                what = next(name for kind, name in unavailable.items() if isinstance(exc, kind))
                log.warning(
                    "%s unavailable (%s); batch of %d messages kept, retrying in %.1f s",
                    what,
                    exc,
                    messages,
                    delay,
                )
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, self.config.retry_max_s)

    # the event loop ------------------------------------------------------------------

    def _run_stage(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except BaseException as exc:  # noqa: BLE001 - run() raises it once every stage ended
            # The other stages stop too: nothing after a failed batch may be acked.
            self._failures.append(exc)
            self._stopping.set()

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finish the commits in hand, then disconnect."""
        await self.handler.start()
        try:
            await self._consume(stop)
        finally:
            await self.handler.stop()
        if self._failures:
            raise self._failures[0]

    async def _consume(self, stop: asyncio.Event) -> None:
        # A stop request reaches every stage at once, also while they wait out an
        # outage: batches not yet committed are left unacked for the broker to resend.
        watcher = asyncio.create_task(self._relay_stop(stop))
        try:
            await asyncio.to_thread(self.subscriber.start)
        except BaseException:
            watcher.cancel()
            raise
        self.subscribed.set()
        names = ["bikesense-prepare"] + [
            "bikesense-write" + (f"-{i + 1}" if i else "") for i in range(self.writers)
        ]
        loops: list[Callable[[], None]] = [self._prepare_loop]
        loops += [partial(self._write_loop, i) for i in range(self.writers)]
        stages = [
            threading.Thread(target=self._run_stage, args=(loop,), name=name, daemon=True)
            for loop, name in zip(loops, names, strict=True)
        ]
        for thread in stages:
            thread.start()
        log.info("%s consuming %s", self.name, self.layout.up_filter())
        try:
            await asyncio.to_thread(_join, stages)
        finally:
            self._stopping.set()
            await asyncio.to_thread(_join, stages)
            watcher.cancel()
            await asyncio.to_thread(self.subscriber.stop)
            log.info("%s stopped; unacknowledged messages stay with the broker", self.name)


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
