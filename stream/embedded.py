"""The embedded runtime: one process, MQTT → admit → QA and bin → PostgreSQL, acked after commit.

The default runtime, and what the demo and the tests run. asyncio drives it;
the blocking parts (waiting on the bounded queue, numpy work, the database
transaction) run in a worker thread so the event loop stays free for signals.

Delivery: a message is acknowledged only after the transaction holding its
readings, its reject or its status update has committed. If the database goes
away, the batch is retried with back-off and nothing is acked meanwhile; the
queue fills, paho's thread blocks, the broker's in-flight window fills, and
the broker holds the rest. Kill the process at any point and the broker
redelivers what was not acked; the exactly-once writer ignores what had already
been stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from ingest.admission import Admitted, admit
from ingest.keys import KeyCache
from ingest.mqtt import InboundMessage, MqttSubscriber
from ingest.topics import DEFAULT_SHARE_GROUP, TopicLayout
from ingest.validation import AdmissionRules
from storage.kits import MasterKey
from stream.core.privacy import Zone, payload_in_zones
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitStates
from stream.maintenance import MaintenanceConfig, maintain
from stream.metrics import RuntimeMetrics
from stream.sink import PostgresSink, WriteOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    mqtt_url: str
    database_url: str
    client_id: str = "bikesense-stream-1"
    topic_root: str = TopicLayout().root
    share_group: str = DEFAULT_SHARE_GROUP
    #: Messages taken into one transaction at most; a frame holds up to a few hundred readings.
    max_batch_messages: int = 1000
    #: How long to wait for more messages once one arrived, before writing.
    linger_s: float = 0.05
    #: Bound of the hand-over queue from paho's thread. When full, paho's thread
    #: blocks (back-pressure to the broker), it never drops.
    queue_size: int = 4000
    core: CoreConfig = field(default_factory=CoreConfig)
    rules: AdmissionRules = field(default_factory=AdmissionRules)
    #: Back-off while the database is away.
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0
    #: Raw-reading retention run from this process (stream.maintenance); None: not here.
    maintenance: MaintenanceConfig | None = field(default_factory=MaintenanceConfig)


class EmbeddedRuntime:
    def __init__(self, config: EmbeddedConfig, master_key: MasterKey, *,
                 on_batch: Callable[[WriteOutcome], None] | None = None) -> None:
        self.config = config
        self.layout = TopicLayout(config.topic_root)
        self.metrics = RuntimeMetrics()
        self._queue: queue.Queue[InboundMessage] = queue.Queue(maxsize=config.queue_size)
        self._stopping = threading.Event()
        #: Set once the subscriptions are in place: from then on nothing published is missed.
        self.ready = threading.Event()
        self._states: KitStates = {}
        self._sink = PostgresSink(config.database_url, config.core, master_key)
        self._keys = KeyCache(self._sink.load_kit_keys)
        self._on_batch = on_batch
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
                self._queue.put(message, timeout=0.5)
            except queue.Full:
                self.metrics.backpressure_waits.inc()
                continue
            return

    # the worker thread --------------------------------------------------------------

    def _collect(self) -> list[InboundMessage]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.linger_s
        while len(batch) < self.config.max_batch_messages:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[InboundMessage]) -> WriteOutcome | None:
        """Admit, process and write one batch; retry while the database is away.

        Returns None if asked to stop before the batch could be written: it is
        then not acked, and the broker delivers it again.
        """
        delay = self.config.retry_min_s
        while True:
            try:
                # Inside the retry: looking up a kit not in the key cache reads the database.
                admitted = admit(batch, self.layout, self._keys.lookup, self.config.rules)
                processed = process_batch(admitted.readings, _latest(admitted), self._states,
                                          self.config.core)
                # Each reading keeps the arrival time of its own frame.
                processed.enriched["received_ms"] = admitted.received_ms
                withhold_zone_payloads(admitted, self.config.core.privacy.zones)
                outcome = self._sink.write(admitted, processed.to_store())
            except psycopg.OperationalError as exc:
                self.metrics.database_errors.inc()
                log.warning("database unavailable (%s); batch of %d messages kept, "
                            "retrying in %.1f s", exc, len(batch), delay)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            self._states = processed.states
            return outcome

    def _count(self, admitted: Admitted, outcome: WriteOutcome) -> None:
        self.metrics.frames_accepted.inc(sum(admitted.frames_accepted.values()))
        for reason, count in admitted.frames_rejected.items():
            self.metrics.frames_rejected.labels(reason=reason).inc(count)
        self.metrics.readings_stored.inc(outcome.inserted)
        self.metrics.readings_duplicate.inc(outcome.duplicates)

    def _work_once(self) -> int:
        batch = self._collect()
        if not batch:
            return 0
        outcome = self._handle(batch)
        if outcome is None:
            return 0
        acked = self._subscriber.ack(batch)
        self._count(outcome.admitted, outcome)
        self.metrics.messages_acked.inc(acked)
        if self._on_batch is not None:
            self._on_batch(outcome)
        return len(batch)

    # the event loop ------------------------------------------------------------------

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finish the batch in hand, then disconnect."""
        await asyncio.to_thread(self._subscriber.start)
        self.ready.set()
        # A stop request reaches the worker thread at once, also while it waits for
        # the database: the batch in hand is then left unacked for the broker to resend.
        watcher = asyncio.create_task(self._relay_stop(stop))
        upkeep = (asyncio.create_task(maintain(self.config.database_url,
                                               self.config.maintenance, stop))
                  if self.config.maintenance is not None else None)
        log.info("embedded runtime consuming %s", self.layout.up_filter())
        try:
            while not stop.is_set():
                await asyncio.to_thread(self._work_once)
        finally:
            self._stopping.set()
            watcher.cancel()
            if upkeep is not None:
                upkeep.cancel()
                await asyncio.gather(upkeep, return_exceptions=True)
            await asyncio.to_thread(self._subscriber.stop)
            self._sink.close()
            log.info("embedded runtime stopped; unacknowledged messages stay with the broker")


def withhold_zone_payloads(admitted: Admitted, zones: tuple[Zone, ...]) -> None:
    """Rejected frames keep their bytes for diagnosis, except a frame with a position in a
    privacy zone: its reject row keeps the reason and an empty payload (DESIGN.md decision 4)."""
    for i, reject in enumerate(admitted.rejects):
        if payload_in_zones(reject.payload, zones):
            admitted.rejects[i] = dataclasses.replace(
                reject, payload=b"",
                detail=f"{reject.detail}; payload withheld: a position is in a privacy zone")


def _latest(admitted: Admitted) -> int:
    return int(admitted.received_ms.max()) if len(admitted.received_ms) else 0


async def run_until_signalled(runtime: EmbeddedRuntime) -> None:
    """Run ``runtime`` until SIGTERM or SIGINT, then stop cleanly, finishing the batch in hand."""
    import signal  # noqa: PLC0415 - only the command-line driver needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.run(stop)
