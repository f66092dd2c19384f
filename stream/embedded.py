"""The embedded runtime: one process, MQTT → admit → QA and bin → PostgreSQL, acked after commit.

The default runtime, and what the demo and the tests run. asyncio drives it and
keeps the event loop free for signals; the blocking work runs in stage threads,
so that the database's work and ours overlap instead of taking turns:

- the **prepare** stage takes messages off the bounded hand-over queue, admits
  them (decode, authenticate, validate), runs them through the stream core,
  advancing the kit states chunk after chunk, in arrival order, and checks and
  de-duplicates their rows for the write (``storage.writer.plan_write``); the
  prepared chunks add up to the *next batch*;
- the **write** stage takes the next batch as soon as it is free, writes it in
  one transaction and, once that has committed, acknowledges its messages.
  Before the transaction it aggregates the batch's rows and encodes the COPY
  payloads, once per batch (a batch aggregates into fewer partials per reading
  than its chunks would, and the prepare stage, which has to keep the kits'
  order, is left only what needs it). Under load that work is done earlier: when
  the next batch is full and every writer is busy, the prepare stage, which can
  take nothing more, readies the batch instead of waiting (``PostgresSink.ready``),
  and the writer that takes it goes straight to its statements. Inside the
  transaction it only runs statements, unless some readings were stored already
  (a redelivery), when it aggregates those that were new. It has
  ``EmbeddedConfig.writers`` threads (two by default), each with its own
  connection: while one batch is being written, a second writer takes the next
  batch only once it is full or has waited ``batch_wait_s``, so under load two
  transactions run at once (one waiting on the database's locks or its commit
  while the other works), at light load one writer does everything, as before,
  and in between no batch waits long for a writer.

So while batch N is written and committed, batch N+1 is collected and
processed, and it grows for as long as the write of N takes, up to
``max_batch_messages``: a slow write makes the next batch bigger, and bigger
batches cost the database less per reading (fewer partial-aggregate rows to
merge). The depth is bounded: the batches being written and one being prepared,
so at most ``(writers + 1) × max_batch_messages`` messages are between the queue
and their commit. ``EmbeddedConfig.overlap_stages=False`` runs the stages in
turn, with one writer.

Delivery: a message is acknowledged only after the transaction holding its
readings, its reject or its status update has committed, and never before the
messages of an earlier batch (batches are numbered in the order their messages
arrived; two writers may commit them out of order, but each is acked only after
the one before it was). If the database goes away, the writes in hand are retried
with back-off; the next batch fills up, the queue fills, paho's thread blocks,
the broker's in-flight window fills, and the broker holds the rest. On stop, the
writes in hand are finished (committed, then acked) unless they are waiting out a
database outage; batches not committed stay unacknowledged, and so does a batch
committed after one that was not (the broker redelivers it; its readings are
duplicates then, which change nothing). Kill the process at any point and the
broker redelivers what was not acked; the exactly-once writer ignores what had
already been stored.

Concurrent writers cannot deadlock: every statement of a batch's transaction
locks rows in key order (readings, cell-windows, presence, cells and kits are
sorted the same way in every batch), and partitions are created before the
transaction, committed on their own. With end-of-ride trimming on there is one
writer: a batch's transaction reads the readings the batch before held back.

What bounds the messages held unacknowledged is the hand-over queue and the
batches. A broker that enforces an in-flight window (``max_inflight_messages``)
must let it cover ``writers + 1`` full batches, or the next batch cannot fill
while one is being written; Mosquitto 2.0.11 stops enforcing it after the first PUBACK
(measured, docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import psycopg

from ingest.admission import Admitted, admit
from ingest.keys import KeyCache, KitKey
from ingest.mqtt import InboundMessage, MqttSubscriber
from ingest.topics import DEFAULT_SHARE_GROUP, TopicLayout
from ingest.validation import AdmissionRules
from storage.kits import MasterKey, kit_secrets
from storage.writer import KnownRows, WritePlan, join_plans
from stream.core.privacy import Zone, payload_in_zones
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitStates
from stream.maintenance import MaintenanceConfig, maintain
from stream.metrics import RuntimeMetrics
from stream.sink import PostgresSink, WriteOutcome

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How often a stage thread that waits looks at the stop flag.
_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    mqtt_url: str
    database_url: str
    client_id: str = "bikesense-stream-1"
    topic_root: str = TopicLayout().root
    share_group: str = DEFAULT_SHARE_GROUP
    #: Messages taken into one transaction at most; a frame holds up to a few hundred readings.
    max_batch_messages: int = 1000
    #: How long to wait for more messages once one arrived, before preparing them.
    linger_s: float = 0.05
    #: Bound of the hand-over queue from paho's thread. When full, paho's thread
    #: blocks (back-pressure to the broker), it never drops.
    queue_size: int = 4000
    #: Prepare the next batch while one is written (the default); False: collect,
    #: prepare, write and ack one batch at a time.
    overlap_stages: bool = True
    #: Batches written at once, each in its own transaction on its own connection,
    #: acked in arrival order all the same. A second writer takes a batch only when
    #: it is full while the first is still writing, so it works only under load.
    #: One with ``overlap_stages=False`` or end-of-ride trimming on (which reads in
    #: its transaction what the batch before held back).
    writers: int = 2
    #: While one batch is being written, another writer takes the next batch once it
    #: is full or once it has waited this long, whichever comes first: under load the
    #: batches stay full, and at a steady rate below it no message waits longer than
    #: this for a writer while another batch is written.
    batch_wait_s: float = 0.5
    core: CoreConfig = field(default_factory=CoreConfig)
    rules: AdmissionRules = field(default_factory=AdmissionRules)
    #: Back-off while the database is away.
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0
    #: Raw-reading retention run from this process (stream.maintenance); None: not here.
    maintenance: MaintenanceConfig | None = field(default_factory=MaintenanceConfig)

    def __post_init__(self) -> None:
        if self.max_batch_messages < 1:
            msg = f"max_batch_messages must be at least 1 (got {self.max_batch_messages})"
            raise ValueError(msg)
        if self.writers < 1:
            raise ValueError(f"writers must be at least 1 (got {self.writers})")


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Messages admitted and processed, waiting for their transaction."""

    messages: list[InboundMessage]
    admitted: Admitted
    #: The enriched rows to store (privacy-withheld rows already left out).
    rows: np.ndarray
    #: Every kit's state after these messages: the runtime's once they have committed
    #: (the sink needs them for end-of-ride trimming).
    states: KitStates
    #: ``rows`` checked and de-duplicated for the write (``PostgresSink.plan``), so that
    #: this Python work is done here rather than inside the write's transaction.
    plan: WritePlan | None = None

    @classmethod
    def joined(cls, parts: Sequence[PreparedBatch]) -> PreparedBatch:
        """One batch of consecutive prepared chunks, in order."""
        if len(parts) == 1:
            return parts[0]
        admitted = Admitted(
            np.concatenate([p.admitted.readings for p in parts]),
            np.concatenate([p.admitted.received_ms for p in parts]),
            rejects=[r for p in parts for r in p.admitted.rejects],
            statuses=[u for p in parts for u in p.admitted.statuses],
            frames_accepted=sum((p.admitted.frames_accepted for p in parts), Counter()),
        )
        plans = [p.plan for p in parts if p.plan is not None]
        return cls([m for p in parts for m in p.messages], admitted,
                   np.concatenate([p.rows for p in parts]), parts[-1].states,
                   join_plans(plans) if len(plans) == len(parts) else None)


#: What the prepare stage hands to the write stage: prepared chunks, or the bare
#: messages when a subclass handles whole batches itself (:meth:`EmbeddedRuntime._handle`).
_Chunk = PreparedBatch | list[InboundMessage]


class EmbeddedRuntime:
    """MQTT to PostgreSQL in one process, in two overlapping stages (see the module docstring).

    A subclass changes what happens to a batch either by overriding
    :meth:`_prepare` and :meth:`_store` (the two stages), or by overriding
    :meth:`_handle`, which then does the whole batch in the write stage while the
    prepare stage only collects (``stream.faust_app.ingest.KafkaIngest``).
    """

    def __init__(self, config: EmbeddedConfig, master_key: MasterKey, *,
                 on_batch: Callable[[WriteOutcome], None] | None = None) -> None:
        self.config = config
        self.layout = TopicLayout(config.topic_root)
        self.metrics = RuntimeMetrics()
        self._queue: queue.Queue[InboundMessage] = queue.Queue(maxsize=config.queue_size)
        self._stopping = threading.Event()
        #: Set once the subscriptions are in place: from then on nothing published is missed.
        self.ready = threading.Event()
        #: Kit states after the last committed batch.
        self._states: KitStates = {}
        #: Kit states after the last prepared chunk (the prepare stage's own).
        self._prepared_states: KitStates = {}
        self._whole_batches = type(self)._handle is not EmbeddedRuntime._handle
        serial = (not config.overlap_stages or self._whole_batches
                  or config.core.privacy.trim_end_s > 0)
        #: One sink (connection) per write-stage thread; the first is also the planner's.
        #: They share what their commits stored (presence rows, cells: KnownRows).
        known = KnownRows()
        self._sinks = [PostgresSink(config.database_url, config.core, known)
                       for _ in range(1 if serial else config.writers)]
        self._sink = self._sinks[0]
        # Admission reads kit keys on a connection of its own: the prepare stage must
        # never run a query inside the write stage's open transaction.
        self._key_reader = KitKeyReader(config.database_url, master_key)
        self._keys = KeyCache(self._key_reader.load)
        self._on_batch = on_batch
        # The next batch, handed from the prepare stage to the write stage. Bounded:
        # at most max_batch_messages messages (the prepare stage waits for room).
        self._handover = threading.Condition()
        self._next: list[_Chunk] = []
        self._next_messages = 0
        self._next_since = 0.0  # when the first chunk of the next batch was handed over
        # A full next batch waiting for a writer is readied by the prepare stage
        # (_ready_full_batch): being readied, no writer takes it; once ready, it is one
        # chunk whose plan is aggregated and encoded.
        self._readying = False
        self._next_ready = False
        self._can_ready = config.overlap_stages and not self._whole_batches
        self._writing = 0  # batches taken by write-stage threads and not finished
        # Acks in arrival order: batches are numbered as they are taken, and one is
        # acked only after the one before it was. A batch that ends unacked (stop,
        # error) breaks the chain: nothing after it is acked.
        self._taken = 0
        self._acked_through = -1
        self._chain_broken = False
        self._failures: list[BaseException] = []
        self._subscriber = MqttSubscriber(
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
            chunk = messages if self._whole_batches else self._prepare(messages)
            if chunk is None:
                continue  # stopped during a database outage: the messages stay unacked
            with self._handover:
                if not self._next:
                    self._next_since = time.monotonic()
                self._next.append(chunk)
                self._next_messages += len(messages)
                self._handover.notify_all()

    def _ready_full_batch(self) -> bool:
        """While the next batch is full and every writer is busy, make it ready for its
        transaction (``PostgresSink.ready``: join its chunks, aggregate, leave out what
        is known stored, encode) instead of idling: the writer that takes it then only
        runs its statements. True if it readied one."""
        if not self._can_ready:
            return False
        with self._handover:
            if (self._readying or self._next_ready or not self._next
                    or self._next_messages < self.config.max_batch_messages
                    or self._writing < len(self._sinks)):
                return False
            chunks = self._next
            self._readying = True
        readied: _Chunk | None = None
        try:
            batch = _joined(chunks)
            if isinstance(batch, PreparedBatch) and batch.plan is not None:
                batch = dataclasses.replace(batch, plan=self._sink.ready(batch.plan))
            readied = batch
        finally:
            # On an error the chunks stay as they were (and the stage fails, stopping all).
            with self._handover:
                self._readying = False
                # Always the same list: no writer takes a batch being readied.
                if readied is not None and self._next is chunks:
                    self._next, self._next_ready = [readied], True
                self._handover.notify_all()
        return True

    def _wait_for_room(self) -> int:
        """How many more messages the next batch may take; 0 after a while without room."""
        def room() -> int:
            if self.config.overlap_stages:
                return self.config.max_batch_messages - self._next_messages
            # In turn: nothing is collected while a batch waits or is being written.
            return 0 if self._next or self._writing else self.config.max_batch_messages

        with self._handover:
            self._handover.wait_for(lambda: room() > 0 or self._stopping.is_set(), _POLL_S)
            return 0 if self._stopping.is_set() else room()

    def _collect(self, limit: int) -> list[InboundMessage]:
        try:
            first = self._queue.get(timeout=_POLL_S)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.linger_s
        while len(batch) < limit:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _prepare(self, batch: list[InboundMessage]) -> PreparedBatch | None:
        """Admit and process messages, continuing from the ones prepared before them.

        Returns None if asked to stop while the database (the kit keys) was away.
        """
        # Looking up a kit that is not in the key cache reads the database.
        admitted = self._with_retries(
            lambda: admit(batch, self.layout, self._keys.lookup, self.config.rules), len(batch))
        if admitted is None:
            return None
        processed = process_batch(admitted.readings, _latest(admitted), self._prepared_states,
                                  self.config.core)
        # Each reading keeps the arrival time of its own frame.
        processed.enriched["received_ms"] = admitted.received_ms
        withhold_zone_payloads(admitted, self.config.core.privacy.zones)
        # What comes next continues from these states even before they commit:
        # batches are acked in this same order, or (on stop) not at all.
        self._prepared_states = processed.states
        rows = processed.to_store()
        return PreparedBatch(batch, admitted, rows, processed.states, self._sink.plan(rows))

    # the write stage ------------------------------------------------------------------

    def _write_loop(self, sink: PostgresSink) -> None:
        while not self._stopping.is_set():
            taken = self._take_next()
            if taken is None:
                continue
            number, chunks = taken
            acked = False
            try:
                started = time.monotonic()
                batch = _joined(chunks)
                states = None
                if isinstance(batch, PreparedBatch):
                    messages, outcome = batch.messages, self._store(batch, sink)
                    states = batch.states
                else:
                    messages, outcome = batch, self._handle(batch)
                if outcome is None:
                    return  # stopped during a database outage: left unacked
                acked = self._acknowledge_in_turn(number, messages, outcome, states)
                elapsed = time.monotonic() - started
                self.metrics.batch_seconds.observe(elapsed)
                self.metrics.batch_messages.observe(len(messages))
                log.debug("batch of %d messages written and %s in %.3f s (%d readings new, "
                          "%d partial rows merged)", len(messages),
                          "acked" if acked else "left unacked (an earlier batch was not)",
                          elapsed, outcome.inserted, outcome.partials_merged)
            finally:
                with self._handover:
                    self._writing -= 1
                    self._chain_broken |= not acked
                    self.metrics.writes_in_flight.set(self._writing)
                    self._handover.notify_all()

    def _take_next(self) -> tuple[int, list[_Chunk]] | None:
        """Wait a while for the next batch and take all of it, numbered; None if there is
        none, or when stopping (what was prepared then stays unacked, for the broker to
        resend). While another write is in progress, only a full batch is taken, or one
        that has waited ``batch_wait_s``: a batch grows for as long as the write before
        it takes (bigger batches cost the database less per reading), within a bound on
        the latency."""
        def waited() -> float:
            return time.monotonic() - self._next_since

        def ready() -> bool:
            return bool(self._next) and not self._readying and (
                self._writing == 0 or self._next_messages >= self.config.max_batch_messages
                or waited() >= self.config.batch_wait_s)

        with self._handover:
            # Woken by the prepare stage and by writes ending; a batch's waiting time
            # runs out by itself, so look again by then.
            timeout = _POLL_S if not self._next else min(
                _POLL_S, max(self.config.batch_wait_s - waited(), 0.001))
            self._handover.wait_for(lambda: ready() or self._stopping.is_set(), timeout)
            if not ready() or self._stopping.is_set():
                return None
            chunks, self._next, self._next_messages = self._next, [], 0
            self._next_ready = False
            self._writing += 1
            self.metrics.writes_in_flight.set(self._writing)
            number, self._taken = self._taken, self._taken + 1
            self._handover.notify_all()  # room again: the prepare stage starts the batch after
        return number, chunks

    def _store(self, prepared: PreparedBatch, sink: PostgresSink | None = None,
               ) -> WriteOutcome | None:
        """Write one prepared batch in one transaction (on ``sink``, the first by
        default); retry while the database is away.

        Returns None if asked to stop before the batch could be written: it is
        then not acked, and the broker delivers it again.
        """
        sink = sink or self._sink
        return self._with_retries(
            lambda: sink.write(prepared.admitted, prepared.rows, prepared.states, prepared.plan),
            len(prepared.messages))

    def _handle(self, batch: list[InboundMessage]) -> WriteOutcome | None:
        """Prepare and store one batch in turn (what a subclass may override instead)."""
        prepared = self._prepare(batch)
        outcome = None if prepared is None else self._store(prepared)
        if prepared is not None and outcome is not None:
            self._states = prepared.states  # whole batches: one write stage thread
        return outcome

    def _with_retries(self, step: Callable[[], _T], messages: int) -> _T | None:
        """``step()``, again with back-off while the database is away; None once stopping."""
        delay = self.config.retry_min_s
        while True:
            try:
                return step()
            except psycopg.OperationalError as exc:
                self.metrics.database_errors.inc()
                log.warning("database unavailable (%s); batch of %d messages kept, "
                            "retrying in %.1f s", exc, messages, delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, self.config.retry_max_s)

    def _acknowledge_in_turn(self, number: int, messages: list[InboundMessage],
                             outcome: WriteOutcome, states: KitStates | None) -> bool:
        """Ack batch ``number`` once every batch before it was acked; False (and no ack)
        if one of them ended unacked."""
        with self._handover:
            if self._acked_through != number - 1 and not self._chain_broken:
                self.metrics.ack_turn_waits.inc()
            self._handover.wait_for(
                lambda: self._acked_through == number - 1 or self._chain_broken)
            if self._chain_broken:
                return False
        self._acknowledge(messages, outcome)
        with self._handover:
            self._acked_through = number
            if states is not None:
                self._states = states
            self._handover.notify_all()
        return True

    def _acknowledge(self, messages: list[InboundMessage], outcome: WriteOutcome) -> None:
        acked = self._subscriber.ack(messages)
        self._count(outcome.admitted, outcome)
        self.metrics.messages_acked.inc(acked)
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _count(self, admitted: Admitted, outcome: WriteOutcome) -> None:
        self.metrics.frames_accepted.inc(sum(admitted.frames_accepted.values()))
        for reason, count in admitted.frames_rejected.items():
            self.metrics.frames_rejected.labels(reason=reason).inc(count)
        self.metrics.readings_stored.inc(outcome.inserted)
        self.metrics.readings_duplicate.inc(outcome.duplicates)

    # the event loop ------------------------------------------------------------------

    def _run_stage(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except BaseException as exc:  # noqa: BLE001 - run() raises it once both stages ended
            # The other stage stops too: nothing after a failed batch may be acked.
            self._failures.append(exc)
            self._stopping.set()

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finish the write in hand, then disconnect."""
        await asyncio.to_thread(self._subscriber.start)
        self.ready.set()
        # A stop request reaches both stages at once, also while they wait for the
        # database: batches not yet committed are left unacked for the broker to resend.
        watcher = asyncio.create_task(self._relay_stop(stop))
        upkeep = (asyncio.create_task(maintain(self.config.database_url,
                                               self.config.maintenance, stop))
                  if self.config.maintenance is not None else None)
        self._prepared_states = self._states
        loops: list[tuple[Callable[[], None], str]] = [(self._prepare_loop, "bikesense-prepare")]
        loops += [(partial(self._write_loop, sink), "bikesense-write" + (f"-{i + 1}" if i else ""))
                  for i, sink in enumerate(self._sinks)]
        stages = [threading.Thread(target=self._run_stage, args=(loop,), name=name, daemon=True)
                  for loop, name in loops]
        for thread in stages:
            thread.start()
        log.info("embedded runtime consuming %s", self.layout.up_filter())
        try:
            await asyncio.to_thread(_join, stages)
        finally:
            self._stopping.set()
            await asyncio.to_thread(_join, stages)
            watcher.cancel()
            if upkeep is not None:
                upkeep.cancel()
                await asyncio.gather(upkeep, return_exceptions=True)
            await asyncio.to_thread(self._subscriber.stop)
            for sink in self._sinks:
                sink.close()
            self._key_reader.close()
            log.info("embedded runtime stopped; unacknowledged messages stay with the broker")
        if self._failures:
            raise self._failures[0]


class KitKeyReader:
    """Reads every kit's key for the key cache, on a connection of its own."""

    def __init__(self, database_url: str, master_key: MasterKey) -> None:
        self._url = database_url
        self._master_key = master_key
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> Mapping[int, KitKey]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._close()
                    self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                                 application_name="bikesense-stream-keys")
                secrets = kit_secrets(self._conn, self._master_key)
            except psycopg.OperationalError:
                self._close()
                raise
        return {k: KitKey(k, s.secret, s.active) for k, s in secrets.items()}

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()


def withhold_zone_payloads(admitted: Admitted, zones: tuple[Zone, ...]) -> None:
    """Rejected frames keep their bytes for diagnosis, except a frame with a position in a
    privacy zone: its reject row keeps the reason and an empty payload (DESIGN.md decision 4)."""
    for i, reject in enumerate(admitted.rejects):
        if payload_in_zones(reject.payload, zones):
            admitted.rejects[i] = dataclasses.replace(
                reject, payload=b"",
                detail=f"{reject.detail}; payload withheld: a position is in a privacy zone")


def _joined(chunks: list[_Chunk]) -> _Chunk:
    """The chunks of a batch as one: prepared chunks joined, or all the bare messages."""
    prepared = [c for c in chunks if isinstance(c, PreparedBatch)]
    if prepared:
        return PreparedBatch.joined(prepared)
    return [m for c in chunks if isinstance(c, list) for m in c]


def _latest(admitted: Admitted) -> int:
    return int(admitted.received_ms.max()) if len(admitted.received_ms) else 0


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


async def run_until_signalled(runtime: EmbeddedRuntime) -> None:
    """Run ``runtime`` until SIGTERM or SIGINT, then stop cleanly, finishing the write in hand."""
    import signal  # noqa: PLC0415 - only the command-line driver needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.run(stop)
