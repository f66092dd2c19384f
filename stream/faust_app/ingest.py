"""``bikesense ingest --to kafka``: MQTT → admission → Kafka, acknowledged after the produce.

The embedded runtime's machinery (bounded hand-over queue, back-pressure,
batching, acks only after what a batch carried is durable) with another
destination: :class:`KafkaIngest` overrides only what one batch does.

For each batch of MQTT messages:

1. admission (authentication needs the kit keys from the database);
2. rejects and kit status reports go straight to the database, in one
   transaction, through the embedded runtime's sink: they are small, the
   workers have nothing to add to them, and they stay out of Kafka;
3. the admitted readings are produced to ``bikesense.readings``, one message per
   kit (key: the kit id), with ``acks=all`` and an idempotent producer;
4. only when Kafka acknowledged every message are the MQTT messages acked.

A failure at step 2 or 3 is retried with back-off (step 3 alone, if 2 was
done); nothing is acked meanwhile. A crash between 3 and 4 makes the broker
deliver the batch again: the readings then reach Kafka twice, which the
writer's identity key absorbs, and the rejects are logged twice (rejects are a
log of arrivals, storage/rejects.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import psycopg

from bikesense.settings import Settings, resolve_kafka_url
from ingest.admission import Admitted, admit
from ingest.mqtt import InboundMessage
from storage.kits import MasterKey
from stream.core.batch import ENRICHED_DTYPE
from stream.core.privacy import in_zones
from stream.embedded import (
    EmbeddedConfig,
    EmbeddedRuntime,
    run_until_signalled,
    withhold_zone_payloads,
)
from stream.faust_app.codec import encode_readings, kit_key
from stream.faust_app.exceptions import KafkaError
from stream.faust_app.topics import (
    DEFAULT_PARTITIONS,
    TopicSpec,
    bootstrap_servers,
    ensure_topics,
    readings_topic,
)
from stream.sink import WriteOutcome

log = logging.getLogger(__name__)

#: At most this many readings per Kafka message (86 + 8 bytes each: under 500 kB,
#: half of Kafka's default ``max.message.bytes``). A kit's share of one batch is
#: rarely more than a few frames.
MAX_READINGS_PER_MESSAGE = 5000

_NO_ENRICHED = np.empty(0, ENRICHED_DTYPE)
_T = TypeVar("_T")


def readings_messages(admitted: Admitted, *,
                      max_readings: int = MAX_READINGS_PER_MESSAGE) -> list[tuple[bytes, bytes]]:
    """The admitted readings as ``(key, value)`` messages: one kit per message, in order."""
    readings, received = admitted.readings, admitted.received_ms
    if not len(readings):
        return []
    order = np.argsort(readings["kit_id"], kind="stable")
    kits = readings["kit_id"][order]
    starts = np.flatnonzero(np.r_[True, kits[1:] != kits[:-1]])
    ends = np.r_[starts[1:], len(kits)]
    messages = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        key = kit_key(int(kits[lo]))
        for chunk_lo in range(lo, hi, max_readings):
            rows = order[chunk_lo:min(chunk_lo + max_readings, hi)]
            messages.append((key, encode_readings(readings[rows], received[rows])))
    return messages


class ReadingsProducer(Protocol):
    async def start(self) -> None: ...

    async def send_all(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once Kafka acknowledged every message; raise :class:`KafkaError` if not."""

    async def stop(self) -> None: ...


class AiokafkaReadingsProducer:
    """An idempotent aiokafka producer with ``acks=all`` for one topic."""

    def __init__(self, kafka_url: str, topic: str, *, client_id: str,
                 partitions: int = DEFAULT_PARTITIONS) -> None:
        self.servers = bootstrap_servers(kafka_url)
        self.topic = topic
        self.partitions = partitions
        self._client_id = client_id
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]  # noqa: PLC0415
        from aiokafka.errors import KafkaError as AiokafkaError  # type: ignore[import-untyped]  # noqa: PLC0415

        # Before the first produce: a broker that creates topics on demand would give
        # this one its own default partition count (stream/faust_app/topics.py).
        await ensure_topics(self.servers, [TopicSpec(self.topic, self.partitions)],
                            client_id=self._client_id)

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, client_id=self._client_id, acks="all",
            enable_idempotence=True, linger_ms=5, max_request_size=2 * 1024 * 1024,
        )
        try:
            await self._producer.start()
        except AiokafkaError as exc:
            await self._producer.stop()
            msg = f"cannot reach Kafka at {', '.join(self.servers)}: {exc}"
            raise KafkaError(msg) from exc

    async def send_all(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        from aiokafka.errors import KafkaError as AiokafkaError  # noqa: PLC0415

        try:
            pending = [await self._producer.send(self.topic, value=value, key=key)
                       for key, value in messages]
            await asyncio.gather(*pending)
        except AiokafkaError as exc:
            msg = f"Kafka did not take {len(messages)} messages for {self.topic}: {exc}"
            raise KafkaError(msg) from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


class KafkaIngest(EmbeddedRuntime):
    """The embedded runtime's MQTT side, handing readings to Kafka instead of the stream core."""

    def __init__(self, config: EmbeddedConfig, master_key: MasterKey,
                 producer: ReadingsProducer, *,
                 on_batch: Callable[[WriteOutcome], None] | None = None) -> None:
        super().__init__(config, master_key, on_batch=on_batch)
        self._producer = producer
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()
        # Retries wait on the thread-side stop flag; raise it as soon as we are asked to stop.
        watcher = asyncio.create_task(self._stop_retries_on(stop))
        try:
            await super().run(stop)
        finally:
            watcher.cancel()
            await self._producer.stop()

    async def _stop_retries_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    def _handle(self, batch: list[InboundMessage]) -> WriteOutcome | None:
        """Admit, store rejects and statuses, produce readings; None if stopped first."""
        admitted = self._retrying(lambda: self._admit_and_record(batch), "database")
        if admitted is None:
            return None
        messages = readings_messages(admitted)
        if messages and self._retrying(lambda: self._produce(messages), "Kafka") is None:
            return None
        return WriteOutcome(admitted, inserted=0, duplicates=0, partials_merged=0,
                            rejects=len(admitted.rejects))

    def _admit_and_record(self, batch: list[InboundMessage]) -> Admitted:
        # Inside the retry: a kit missing from the key cache is looked up in the database.
        admitted = admit(batch, self.layout, self._keys.lookup, self.config.rules)
        # Privacy zones apply before anything leaves this process (DESIGN.md decision 4):
        # zone readings never reach Kafka, and a reject with a zone position keeps no bytes.
        zones = self.config.core.privacy.zones
        withhold_zone_payloads(admitted, zones)
        if zones and len(admitted.readings):
            keep = ~in_zones(admitted.readings["lat_deg"], admitted.readings["lon_deg"], zones)
            admitted.readings = admitted.readings[keep]
            admitted.received_ms = admitted.received_ms[keep]
        if admitted.rejects or admitted.statuses:
            self._sink.write(admitted, _NO_ENRICHED)
        return admitted

    def _produce(self, messages: list[tuple[bytes, bytes]]) -> bool:
        assert self._loop is not None, "run() sets the loop before any batch"
        asyncio.run_coroutine_threadsafe(self._producer.send_all(messages), self._loop).result()
        return True

    def _retrying(self, step: Callable[[], _T], what: str) -> _T | None:
        delay = self.config.retry_min_s
        while True:
            try:
                return step()
            except (psycopg.OperationalError, KafkaError) as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self.metrics.database_errors.inc()
                log.warning("%s unavailable (%s); batch kept, retrying in %.1f s", what, exc, delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, self.config.retry_max_s)


def run_kafka_ingest(settings: Settings, config: EmbeddedConfig,
                     metrics_port: int | None = None) -> None:
    """Run ``bikesense ingest --to kafka`` until SIGTERM or SIGINT.

    ``config`` is the embedded runtime's, built from the same settings and options
    (so retention and the other maintenance settings hold here too); the readings
    go to ``{BIKESENSE_KAFKA_APP_ID}.readings`` instead of the stream core.
    """
    from storage.cli import master_key_from_environment  # noqa: PLC0415 - CLI edge only

    producer = AiokafkaReadingsProducer(resolve_kafka_url(settings),
                                        readings_topic(settings.kafka_app_id),
                                        client_id=config.client_id,
                                        partitions=settings.kafka_partitions)
    runtime = KafkaIngest(config, master_key_from_environment(settings), producer)
    if metrics_port is not None:
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(metrics_port, addr="127.0.0.1", registry=runtime.metrics.registry)
    asyncio.run(run_until_signalled(runtime))
