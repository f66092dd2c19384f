"""The distributed runtime's Kafka topics: created with their partition count, or checked.

Every topic bikesense reads is keyed (by kit, by cell) and the kit-state table's
changelog is partitioned like the readings topic, so all of them must have the
partition count the workers are configured with. Kafka's own ways of making a
topic do not guarantee it: a broker with ``auto.create.topics.enable`` creates
one on the first produce with its ``num.partitions``, and faust skips a topic
that exists whatever its count. So ingest and the workers call
:func:`ensure_topics` before they produce or consume: a missing topic is
created with the right count, one with another count stops them with a
:class:`TopicLayoutError` that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bikesense.exceptions import ConfigurationError
from stream.faust_app.exceptions import KafkaError, TopicLayoutError

#: Partitions of every bikesense topic unless configured (``--partitions``): the most
#: workers that can share the work. Fixed once data flows.
DEFAULT_PARTITIONS = 8


def bootstrap_servers(kafka_url: str) -> list[str]:
    """``kafka://h1:9092;kafka://h2:9092`` (faust's form) or ``kafka://h1:9092,h2:9092``
    → ``["h1:9092", "h2:9092"]``."""
    servers = []
    for part in kafka_url.replace(";", ",").split(","):
        host = part.strip().removeprefix("kafka://").rstrip("/")
        if host:
            servers.append(host if ":" in host else f"{host}:9092")
    if not servers:
        msg = f"no Kafka broker in {kafka_url!r}; expected kafka://host:9092"
        raise ConfigurationError(msg)
    return servers


def readings_topic(app_id: str) -> str:
    """The topic ingest produces to and the qa agent reads: ``{app id}.readings``."""
    return f"{app_id}.readings"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


#: The table changelog's settings, as faust creates them (a compacted topic).
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}


async def ensure_topics(
    servers: Sequence[str], specs: Sequence[TopicSpec], *, client_id: str = "bikesense-topics"
) -> list[str]:
    """Create the missing topics of ``specs``; check the partition count of the others.

    Returns the names of the topics created. Raises :class:`TopicLayoutError`
    when one exists with another count, :class:`KafkaError` when the broker
    cannot be reached or refuses.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]  # noqa: PLC0415
    from aiokafka.errors import KafkaError as AiokafkaError  # type: ignore[import-untyped]  # noqa: PLC0415
    from aiokafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=list(servers), client_id=client_id)
    try:
        await admin.start()
    except AiokafkaError as exc:
        await admin.close()
        msg = f"cannot reach Kafka at {', '.join(servers)}: {exc}"
        raise KafkaError(msg) from exc
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config)
                    for s in missing
                ]
            )
            for name, code, message in _topic_errors(response):
                if code and code != TopicAlreadyExistsError.errno:
                    msg = f"Kafka refused to create topic {name!r} (error {code}: {message})"
                    raise KafkaError(msg)
            # A topic another process created at the same moment is checked like the rest.
            existing |= await _partition_counts(admin, [s.name for s in missing])
        for spec in specs:
            found = existing.get(spec.name)
            if found is not None and found != spec.partitions:
                msg = (
                    f"Kafka topic {spec.name!r} has {found} partitions, but bikesense is "
                    f"configured for {spec.partitions} (the workers' and ingest's "
                    "--partitions): keys would land in other partitions than the kit "
                    "states. Start bikesense with --partitions "
                    f"{found}, or delete the topic while nothing runs."
                )
                raise TopicLayoutError(msg)
        return [s.name for s in missing]
    except AiokafkaError as exc:
        msg = f"Kafka at {', '.join(servers)} failed while checking topics: {exc}"
        raise KafkaError(msg) from exc
    finally:
        await admin.close()


async def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    """Partition count of each of ``names`` that exists."""
    counts = {}
    for topic in await admin.describe_topics(names):
        # error 3: UNKNOWN_TOPIC_OR_PARTITION, the topic does not exist (yet).
        if topic["error_code"] == 0 and topic["partitions"]:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


def _topic_errors(response: Any) -> list[tuple[str, int, str]]:
    errors = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else ""
        errors.append((name, code, message or ""))
    return errors
