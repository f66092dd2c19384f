"""The runtimes put together: the MQTT consumer driving a batch handler.

``ingest`` holds the MQTT consumer and its acknowledgement chain
(``ingest.consumer``) and the handler interface it drives (``ingest.handler``);
``stream`` holds the two handlers. Neither imports the other; they meet here:

- :class:`EmbeddedRuntime`: MQTT → admission → stream core → PostgreSQL in one
  process (``stream.embedded.DatabaseHandler``), the default, and what the demo
  and the tests run;
- :class:`KafkaIngest`: MQTT → admission → Kafka for the faust workers
  (``stream.faust_app.ingest.KafkaHandler``), ``bikesense ingest --to kafka``.

Both run raw-reading retention beside them (``stream.maintenance``).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from bikesense.settings import Settings, resolve_kafka_url
from ingest.consumer import MqttConsumer
from ingest.consumer_config import ConsumerConfig
from ingest.handler import BatchHandler
from ingest.keys import KitKeyReader
from ingest.metrics import RuntimeMetrics
from ingest.validation import AdmissionRules
from storage.kits import MasterKey
from storage.statistics import StatisticsKeeper
from stream.core.process import CoreConfig
from stream.embedded import AGGREGATE_DELAY_S, DatabaseHandler, PreparedBatch
from stream.faust_app.ingest import (
    AiokafkaReadingsProducer,
    KafkaBatch,
    KafkaHandler,
    ReadingsProducer,
)
from stream.faust_app.topics import readings_topic
from stream.maintenance import MaintenanceConfig, keep_rollups, keep_statistics, maintain

B = TypeVar("B")


def _consumer_default(name: str) -> Any:
    """The consumer's own default of ``name``: written once, in ingest.consumer_config."""
    (default,) = [f.default for f in fields(ConsumerConfig) if f.name == name]
    return default


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    """One configuration for either runtime: the consumer's options and the handler's."""

    mqtt_url: str
    database_url: str
    client_id: str = _consumer_default("client_id")
    topic_root: str = _consumer_default("topic_root")
    share_group: str = _consumer_default("share_group")
    #: Messages taken into one transaction at most; a frame holds up to a few hundred readings.
    max_batch_messages: int = _consumer_default("max_batch_messages")
    #: How long to wait for more messages once one arrived, before preparing them.
    linger_s: float = _consumer_default("linger_s")
    #: Bound of the hand-over queue from paho's thread. When full, paho's thread
    #: blocks (back-pressure to the broker), it never drops.
    queue_size: int = _consumer_default("queue_size")
    #: Prepare the next batch while one is written (the default); False: collect,
    #: prepare, write and ack one batch at a time, with one writer.
    overlap_stages: bool = _consumer_default("overlap_stages")
    #: Batches written at once, each in its own transaction on its own connection,
    #: acked in arrival order all the same. A second writer takes a batch only when
    #: it is full (or has waited ``batch_wait_s``) while the first is still writing,
    #: so it works only under load. One with ``overlap_stages=False`` or end-of-ride
    #: trimming on (which reads in its transaction what the batch before held back).
    writers: int = 2
    #: While one batch is being written, another writer takes the next batch once it
    #: is full or once it has waited this long, whichever comes first: under load the
    #: batches stay full, and at a steady rate below it no message waits longer than
    #: this for a writer while another batch is written.
    batch_wait_s: float = _consumer_default("batch_wait_s")
    #: How long a batch's aggregates may wait to be merged with later batches', in a
    #: later transaction (0: each batch merges its own; stream.embedded). The embedded
    #: runtime's only.
    aggregate_delay_s: float = AGGREGATE_DELAY_S
    core: CoreConfig = field(default_factory=CoreConfig)
    rules: AdmissionRules = field(default_factory=AdmissionRules)
    #: Back-off while the database (or Kafka) is away.
    retry_min_s: float = _consumer_default("retry_min_s")
    retry_max_s: float = _consumer_default("retry_max_s")
    #: Raw-reading retention run from this process (stream.maintenance); None: not here.
    maintenance: MaintenanceConfig | None = field(default_factory=MaintenanceConfig)

    def __post_init__(self) -> None:
        if self.max_batch_messages < 1:
            msg = f"max_batch_messages must be at least 1 (got {self.max_batch_messages})"
            raise ValueError(msg)
        if self.writers < 1:
            raise ValueError(f"writers must be at least 1 (got {self.writers})")

    def consumer(self) -> ConsumerConfig:
        return ConsumerConfig(
            mqtt_url=self.mqtt_url,
            client_id=self.client_id,
            topic_root=self.topic_root,
            share_group=self.share_group,
            max_batch_messages=self.max_batch_messages,
            linger_s=self.linger_s,
            queue_size=self.queue_size,
            overlap_stages=self.overlap_stages,
            batch_wait_s=self.batch_wait_s,
            rules=self.rules,
            retry_min_s=self.retry_min_s,
            retry_max_s=self.retry_max_s,
        )


class Runtime(Generic[B]):
    """An MQTT consumer, its handler, the kit-key reader and retention, run together."""

    def __init__(
        self, config: EmbeddedConfig, master_key: MasterKey, handler: BatchHandler[B], *, name: str
    ) -> None:
        self.config = config
        self.handler = handler
        # Admission reads kit keys on a connection of its own: never inside a writer's
        # open transaction.
        self.key_reader = KitKeyReader(config.database_url, master_key)
        self.consumer = MqttConsumer(config.consumer(), handler, self.key_reader, name=name)

    @property
    def subscribed(self) -> threading.Event:
        """Set once the subscriptions are in place: from then on nothing published is missed."""
        return self.consumer.subscribed

    @property
    def metrics(self) -> RuntimeMetrics:
        return self.consumer.metrics

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; finish the commits in hand, then disconnect."""
        maintenance = self.config.maintenance
        upkeep = []
        if maintenance is not None:
            upkeep.append(
                asyncio.create_task(maintain(self.config.database_url, maintenance, stop))
            )
            if maintenance.statistics_interval_s is not None:
                keeper = StatisticsKeeper(interval_s=maintenance.statistics_interval_s)
                upkeep.append(
                    asyncio.create_task(keep_statistics(self.config.database_url, keeper, stop))
                )
            if maintenance.rollup_interval_s is not None:
                upkeep.append(
                    asyncio.create_task(
                        keep_rollups(self.config.database_url, maintenance.rollup_interval_s, stop)
                    )
                )
        try:
            await self.consumer.run(stop)
        finally:
            for task in upkeep:
                task.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            self.key_reader.close()


class EmbeddedRuntime(Runtime[PreparedBatch]):
    """MQTT to PostgreSQL in one process."""

    def __init__(self, config: EmbeddedConfig, master_key: MasterKey) -> None:
        writers = config.writers if config.overlap_stages else 1
        super().__init__(
            config,
            master_key,
            DatabaseHandler(
                config.database_url,
                config.core,
                writers=writers,
                aggregate_delay_s=config.aggregate_delay_s,
            ),
            name="embedded runtime",
        )


class KafkaIngest(Runtime[KafkaBatch]):
    """MQTT to Kafka, for the faust workers of the distributed runtime."""

    def __init__(
        self, config: EmbeddedConfig, master_key: MasterKey, producer: ReadingsProducer
    ) -> None:
        super().__init__(
            config,
            master_key,
            KafkaHandler(config.database_url, config.core, producer),
            name="Kafka ingest runtime",
        )


async def run_until_signalled(runtime: Runtime[B]) -> None:
    """Run ``runtime`` until SIGTERM or SIGINT, then stop cleanly, finishing the write in hand."""
    import signal  # noqa: PLC0415 - only the command-line driver needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.run(stop)


def serve_metrics(runtime: Runtime[B], port: int | None) -> None:
    """Serve the runtime's Prometheus metrics on 127.0.0.1:``port``/metrics, if a port."""
    if port is not None:
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(port, addr="127.0.0.1", registry=runtime.metrics.registry)


def run_embedded(
    config: EmbeddedConfig, master_key: MasterKey, metrics_port: int | None = None
) -> None:
    """Run ``bikesense ingest`` (to the database) until SIGTERM or SIGINT."""
    runtime = EmbeddedRuntime(config, master_key)
    serve_metrics(runtime, metrics_port)
    asyncio.run(run_until_signalled(runtime))


def run_kafka_ingest(
    settings: Settings, config: EmbeddedConfig, metrics_port: int | None = None
) -> None:
    """Run ``bikesense ingest --to kafka`` until SIGTERM or SIGINT.

    ``config`` is the embedded runtime's, built from the same settings and options
    (so retention and the other maintenance settings hold here too); the readings
    go to ``{BIKESENSE_KAFKA_APP_ID}.readings`` instead of the stream core.
    """
    from storage.cli import master_key_of  # noqa: PLC0415 - CLI edge only

    producer = AiokafkaReadingsProducer(
        resolve_kafka_url(settings),
        readings_topic(settings.kafka.app_id),
        client_id=config.client_id,
        partitions=settings.kafka.partitions,
    )
    runtime = KafkaIngest(config, master_key_of(settings), producer)
    serve_metrics(runtime, metrics_port)
    asyncio.run(run_until_signalled(runtime))
