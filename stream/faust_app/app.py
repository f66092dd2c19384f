"""The faust app of the distributed runtime: two topics, one table, two agents.

::

    {app id}.readings   key: kit id   value: BSR1 envelope (codec.py)
        │
        ▼  qa agent, one message at a time, in offset order (consumer.py)
           state of the message's kit from the table {app id}-kit-states (kit id →
           the kit's states by readings offset, kitlog.py; the table's changelog topic
           is what survives a rebalance): the newest below the message's offset,
           process_batch, new state back, enriched rows split by coarse H3 cell
        │
    {app id}.enriched   key: coarse cell  value: BSE1 envelope
        │
        ▼  store agent, micro-batches (stream.take_events)
           PostgresSink.write: the embedded runtime's one-transaction writer

The qa agent handles one message at a time on purpose: a faust table writes a
key's changelog entry to the partition of the event being processed, so a
batch spanning partitions would file some kits' states under the wrong
partition. A message already holds a kit's readings of a whole ingest batch.
Its outputs are sent at once, not as faust "attachments" (off: they would wait
for the next commit); faust flushes its producer before it commits an offset,
so a message's offset is committed only after Kafka took what it produced (at
least once, never lost).

The store agent batches across partitions freely (no table), and its events
are acknowledged only after the transaction committed. Kafka may deliver a
message twice; the writer's identity key makes the second copy a no-op
(docs/design.md decision 2).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import faust

from bikesense.exceptions import ConfigurationError
from bikesense.settings import Settings, resolve_database_url, resolve_kafka_url
from stream.core.exceptions import StreamCoreError
from stream.core.process import CoreConfig
from stream.faust_app.consumer import RebalanceSafeTransport
from stream.faust_app.exceptions import EnvelopeError
from stream.faust_app.steps import QaOutcome, StoreOutcome, qa_step, store_batch
from stream.faust_app.topics import (
    CHANGELOG_CONFIG,
    DEFAULT_PARTITIONS,
    TopicSpec,
    bootstrap_servers,
    ensure_topics,
    readings_topic,
)
from stream.settings import core_config
from stream.sink import PostgresSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DistributedConfig:
    #: Names the faust app (its consumer group) and every topic it uses.
    app_id: str = "bikesense"
    kit_state_table: str = "kit-states"
    #: Partitions of both topics and of the table's changelog: the most workers that
    #: can share the work. Fixed once data flows (keys would move to other partitions).
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = 1
    #: H3 resolution of the enriched topic's key; None: the coarsest aggregated one,
    #: so that every partial of a cell is merged by a single worker.
    routing_resolution: int | None = None
    #: How long Kafka waits for a silent worker (a crash, kill -9) before it gives that
    #: worker's partitions to the others: until then they stand still. Kafka's own
    #: default is 45 s; faust's 60 s.
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    #: How often a partition that does not move while it has messages is sought back.
    stall_check_s: float = 5.0
    #: Enriched messages written in one transaction at most, and how long to wait for them.
    store_batch_max: int = 500
    store_batch_within_s: float = 0.25
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0

    @property
    def readings_topic(self) -> str:
        return readings_topic(self.app_id)

    @property
    def enriched_topic(self) -> str:
        return f"{self.app_id}.enriched"

    @property
    def changelog_topic(self) -> str:
        """faust's name for the table's changelog: ``{app id}-{table}-changelog``."""
        return f"{self.app_id}-{self.kit_state_table}-changelog"

    def topics(self) -> list[TopicSpec]:
        """Every topic the workers read or write, as :func:`ensure_topics` wants them."""
        return [
            TopicSpec(self.readings_topic, self.partitions, self.replication_factor),
            TopicSpec(self.enriched_topic, self.partitions, self.replication_factor),
            TopicSpec(
                self.changelog_topic,
                self.partitions,
                self.replication_factor,
                config=CHANGELOG_CONFIG,
            ),
        ]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DistributedConfig:
        return cls(app_id=settings.kafka.app_id, partitions=settings.kafka.partitions, **overrides)

    def routing_for(self, core: CoreConfig) -> int:
        resolution = (
            min(core.resolutions) if self.routing_resolution is None else self.routing_resolution
        )
        if not 0 <= resolution <= core.finest_resolution:
            msg = (
                f"routing resolution {resolution} must be between 0 and the finest "
                f"configured resolution {core.finest_resolution}"
            )
            raise ConfigurationError(msg)
        return resolution


@dataclass(frozen=True, slots=True)
class StreamApp:
    """The faust app and the parts tests and the worker reach for. faust is untyped: Any."""

    app: Any
    readings: Any  # faust topic {app id}.readings
    enriched: Any  # faust topic {app id}.enriched
    kit_states: Any  # faust table: kit id (bytes) → encoded KitStateLog (kitlog.py)
    qa: Any  # agent over readings
    store: Any  # agent over enriched
    sink: PostgresSink
    core: CoreConfig
    config: DistributedConfig


async def ensure_app_topics(stream_app: StreamApp) -> list[str]:
    """Create the app's topics with its partition count, or refuse a broker whose topics
    have another (stream/faust_app/topics.py); before the worker starts."""
    servers = bootstrap_servers(str(stream_app.app.conf.broker[0]))
    return await ensure_topics(
        servers, stream_app.config.topics(), client_id=f"{stream_app.config.app_id}-topics"
    )


def default_store() -> str:
    """RocksDB when its binding is installed (local state survives restarts), else memory:
    the table is then rebuilt from its changelog topic when a worker starts."""
    if importlib.util.find_spec("rocksdict") is not None:
        return "rocksdb://"
    return "memory://"


def create_app(
    settings: Settings,
    *,
    broker_url: str | None = None,
    store: str = "memory://",
    config: DistributedConfig | None = None,
) -> StreamApp:
    """Build (not start) the faust app; nothing connects until a worker runs it."""
    broker = broker_url or resolve_kafka_url(settings)
    cfg = config or DistributedConfig.from_settings(settings)
    core = core_config(settings)
    if core.privacy.trim_end_s > 0:
        # Held readings must leave the holding table in the same transaction as the
        # batch that settles them (stream.sink); the store agents here see cells, not
        # kits, and the kit agent's table and its forwards are not one transaction.
        msg = (
            "BIKESENSE_PRIVACY_TRIM_END_S: end-of-ride trimming runs in the embedded "
            "runtime (`bikesense ingest`) only; the distributed runtime does not do it "
            "(docs/privacy.md). Unset it here, or run the embedded runtime."
        )
        raise ConfigurationError(msg)
    routing = cfg.routing_for(core)
    app = faust.App(
        cfg.app_id,
        broker=broker,
        store=store,
        autodiscover=False,
        datadir=str(settings.services.state_dir / "faust"),
        web_enabled=False,
        topic_partitions=cfg.partitions,
        topic_replication_factor=cfg.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        processing_guarantee="at_least_once",
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=cfg.heartbeat_interval_s,
    )
    # The consumer that does not lose messages in a rebalance (consumer.py).
    app.transport = RebalanceSafeTransport(app.conf.broker_consumer, app)
    # Our own envelopes (codec.py): faust must pass the bytes through, not read them as
    # JSON, its default serializer whatever the declared type.
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "partitions": cfg.partitions}
    readings = app.topic(
        cfg.readings_topic, internal=True, key_serializer="raw", value_serializer="raw", **raw
    )
    enriched = app.topic(
        cfg.enriched_topic, internal=True, key_serializer="raw", value_serializer="raw", **raw
    )
    kit_states: Any = app.Table(
        cfg.kit_state_table, help="kit id → its states by readings offset (kitlog.py)", **raw
    )
    # A table takes its serializers from its types only (json for bytes); set before the
    # changelog topic is first built from them.
    kit_states.key_serializer = kit_states.value_serializer = "raw"
    # The sink never reads kit secrets (ingest authenticates): the workers hold none.
    sink = PostgresSink(resolve_database_url(settings), core)

    async def qa_body(stream: Any) -> AsyncIterator[QaOutcome | None]:
        # One yield per message, None for one skipped: never filter, or a test's
        # ``put()`` would wait for a yield that does not come.
        consumer: Any = app.consumer  # RebalanceSafeConsumer (consumer.py)
        async for event in stream.events():
            committed = consumer.committed_offset(event.message.tp)
            yield await _qa_event(event, kit_states, enriched, core, routing, committed)

    async def store_body(stream: Any) -> AsyncIterator[StoreOutcome]:
        try:
            async for events in stream.take_events(
                cfg.store_batch_max, within=cfg.store_batch_within_s
            ):
                try:
                    outcome = await store_batch(
                        sink,
                        [e.value for e in events],
                        retry_min_s=cfg.retry_min_s,
                        retry_max_s=cfg.retry_max_s,
                    )
                except asyncio.CancelledError:
                    _keep_unacknowledged(events)
                    raise
                yield outcome
        finally:
            sink.close()

    async def seek_stalled() -> None:
        consumer: Any = app.consumer  # RebalanceSafeConsumer (consumer.py)
        # The timer must outlive a broker that does not answer or a check that fails: a
        # timer task that hangs or dies is silent, and every later stall would be too.
        limit_s = max(3 * cfg.stall_check_s, 15.0)
        try:
            await asyncio.wait_for(consumer.seek_stalled(), timeout=limit_s)
        except TimeoutError:
            log.warning(
                "stall check: no answer from the broker within %.0f s; trying again", limit_s
            )
        except Exception as exc:  # noqa: BLE001 - logged, and the next check runs
            log.warning("stall check failed (%r); trying again", exc)

    # A partition whose messages a rebalance left behind the fetcher (consumer.py).
    app.timer(interval=cfg.stall_check_s, name="bikesense.seek_stalled")(seek_stalled)
    qa_agent = app.agent(readings, name="bikesense.qa")(qa_body)
    store_agent = app.agent(enriched, name="bikesense.store")(store_body)
    return StreamApp(app, readings, enriched, kit_states, qa_agent, store_agent, sink, core, cfg)


def _keep_unacknowledged(events: list[Any]) -> None:
    """The worker is stopping (SIGTERM, a rebalance's restart) while a batch is not yet
    written, say because the database is away: faust's ``take_events`` acknowledges the
    batch's events on its way out whatever happened to them, and the offsets would be
    committed past readings never stored. A reference of our own on each message keeps
    its count above zero: never acknowledged, never committed, delivered again."""
    for event in events:
        event.message.incref()


async def _qa_event(
    event: Any,
    kit_states: Any,
    enriched: Any,
    core: CoreConfig,
    routing: int,
    committed: int | None,
) -> QaOutcome | None:
    key = event.key
    message = event.message
    try:
        # The core is numpy work of a millisecond or so: off the event loop, so that
        # the other agent and faust's own services keep running.
        outcome = await asyncio.to_thread(
            qa_step,
            event.value,
            key,
            kit_states.get(key),
            core,
            routing,
            offset=message.offset,
            committed=committed,
        )
    except (EnvelopeError, StreamCoreError) as exc:
        # Only a foreign producer or another release writes such a message: nothing in it
        # can be trusted, and stopping the partition for it would stop every kit in it.
        log.error(
            "skipping unreadable message %r at %s[%d]@%d: %s",
            key,
            message.topic,
            message.partition,
            message.offset,
            exc,
        )
        return None
    if not outcome.state_reached:
        log.warning(
            "kit %d: %s[%d]@%d processed again from below the states kept for it "
            "(stream/faust_app/kitlog.py); ran with the oldest kept",
            outcome.kit_id,
            message.topic,
            message.partition,
            message.offset,
        )
    if outcome.state is not None:
        kit_states[key] = outcome.state
    for out_key, value in outcome.forwards:
        # Attached to this event: published before its offset is committed.
        await enriched.send(key=out_key, value=value)
    return outcome
