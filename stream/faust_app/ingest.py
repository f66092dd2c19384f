"""``bikesense ingest --to kafka``: MQTT → admission → Kafka, acknowledged after the produce.

The MQTT consumer (``ingest.consumer``: bounded hand-over queue, back-pressure,
batching, acks only after what a batch carried is durable) drives
:class:`KafkaHandler`, the second implementation of its handler interface
(``ingest.handler.BatchHandler``) beside the embedded runtime's database handler;
``bikesense.runtimes`` puts them together.

For each batch of MQTT messages:

1. admission, by the consumer (authentication needs the kit keys from the
   database); privacy-zone readings are left out here, before anything leaves
   the process;
2. rejects and kit status reports go straight to the database, in one
   transaction, through the embedded runtime's sink: they are small, the
   workers have nothing to add to them, and they stay out of Kafka;
3. the admitted readings are produced to ``bikesense.readings``, one message per
   kit (key: the kit id), with ``acks=all`` and an idempotent producer;
4. only when Kafka acknowledged every message are the MQTT messages acked.

A failure at step 2 or 3 is retried with back-off (step 3 alone, if 2 was
done: :attr:`KafkaBatch.recorded`); nothing is acked meanwhile. A crash between
3 and 4 makes the broker deliver the batch again: the readings then reach Kafka
twice, which the writer's identity key absorbs, and the rejects are logged twice
(rejects are a log of arrivals, storage/rejects.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import psycopg

from stream.core.admitted import Admitted, WriteOutcome, withhold_zone_payloads
from stream.core.batch import ENRICHED_DTYPE
from stream.core.privacy import in_zones
from stream.core.process import CoreConfig
from stream.faust_app.codec import encode_readings, kit_key
from stream.faust_app.exceptions import KafkaError
from stream.faust_app.topics import (
    DEFAULT_PARTITIONS,
    TopicSpec,
    bootstrap_servers,
    ensure_topics,
)
from stream.sink import PostgresSink

__all__ = [
    "AiokafkaReadingsProducer",
    "KafkaBatch",
    "KafkaHandler",
    "ReadingsProducer",
    "bootstrap_servers",
    "readings_messages",
]

log = logging.getLogger(__name__)

#: At most this many readings per Kafka message (86 + 8 bytes each: under 500 kB,
#: half of Kafka's default ``max.message.bytes``). A kit's share of one batch is
#: rarely more than a few frames.
MAX_READINGS_PER_MESSAGE = 5000

_NO_ENRICHED = np.empty(0, ENRICHED_DTYPE)


def readings_messages(
    admitted: Admitted, *, max_readings: int = MAX_READINGS_PER_MESSAGE
) -> list[tuple[bytes, bytes]]:
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
            rows = order[chunk_lo : min(chunk_lo + max_readings, hi)]
            messages.append((key, encode_readings(readings[rows], received[rows])))
    return messages


class ReadingsProducer(Protocol):
    async def start(self) -> None: ...

    async def send_all(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once Kafka acknowledged every message; raise :class:`KafkaError` if not."""

    async def stop(self) -> None: ...


class AiokafkaReadingsProducer:
    """An idempotent aiokafka producer with ``acks=all`` for one topic."""

    def __init__(
        self, kafka_url: str, topic: str, *, client_id: str, partitions: int = DEFAULT_PARTITIONS
    ) -> None:
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
        await ensure_topics(
            self.servers, [TopicSpec(self.topic, self.partitions)], client_id=self._client_id
        )

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,
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
            pending = [
                await self._producer.send(self.topic, value=value, key=key)
                for key, value in messages
            ]
            await asyncio.gather(*pending)
        except AiokafkaError as exc:
            msg = f"Kafka did not take {len(messages)} messages for {self.topic}: {exc}"
            raise KafkaError(msg) from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


@dataclass(slots=True)
class KafkaBatch:
    """Admitted messages on their way to Kafka."""

    admitted: Admitted
    #: Its rejects and status reports are in the database: a retry after Kafka
    #: refused only produces again (rejects are a log of arrivals, not deduplicated).
    recorded: bool = False


class KafkaHandler:
    """Records rejects and statuses in the database, produces readings to Kafka."""

    #: One: batches are produced in arrival order, so a kit's readings reach its
    #: partition in order.
    writers = 1
    readies_early = False
    unavailable: Mapping[type[Exception], str] = {
        psycopg.OperationalError: "database",
        KafkaError: "Kafka",
    }

    def __init__(self, database_url: str, core: CoreConfig, producer: ReadingsProducer) -> None:
        self._zones = core.privacy.zones
        self._sink = PostgresSink(database_url, core)
        self._producer = producer
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()

    async def stop(self) -> None:
        try:
            await self._producer.stop()
        finally:
            self._sink.close()

    def prepare(self, admitted: Admitted) -> KafkaBatch:
        # Privacy zones apply before anything leaves this process (docs/design.md decision 4):
        # zone readings never reach Kafka, and a reject with a zone position keeps no bytes.
        withhold_zone_payloads(admitted, self._zones)
        if self._zones and len(admitted.readings):
            keep = ~in_zones(
                admitted.readings["lat_deg"], admitted.readings["lon_deg"], self._zones
            )
            admitted.readings = admitted.readings[keep]
            admitted.received_ms = admitted.received_ms[keep]
        return KafkaBatch(admitted)

    def join(self, chunks: Sequence[KafkaBatch]) -> KafkaBatch:
        return KafkaBatch(Admitted.joined([c.admitted for c in chunks]))

    def ready(self, batch: KafkaBatch) -> KafkaBatch:
        return batch

    def idle(self, writer: int) -> None:
        return None

    def commit(self, batch: KafkaBatch, writer: int) -> WriteOutcome:
        """Store the rejects and statuses (once), then produce the readings."""
        admitted = batch.admitted
        if not batch.recorded:
            if admitted.rejects or admitted.statuses:
                self._sink.write(admitted, _NO_ENRICHED)
            batch.recorded = True
        messages = readings_messages(admitted)
        if messages:
            assert self._loop is not None, "start() sets the loop before any batch"
            asyncio.run_coroutine_threadsafe(self._producer.send_all(messages), self._loop).result()
        return WriteOutcome(
            admitted, inserted=0, duplicates=0, partials_merged=0, rejects=len(admitted.rejects)
        )
