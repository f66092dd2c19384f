"""The MQTT topic layout (docs/ingest.md, "Topics").

Kits publish frames to ``bikesense/v1/kits/{kit_id}/up`` at QoS 1 and their
status to ``bikesense/v1/kits/{kit_id}/status`` (retained, also their last
will). ``kit_id`` is the kit's 32-bit id in decimal. Ingest processes share
the load through one shared subscription group.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

from ingest.exceptions import TopicError

DEFAULT_TOPIC_ROOT = "bikesense/v1"
DEFAULT_SHARE_GROUP = "bikesense-ingest"
_MAX_KIT_ID = 2**32 - 1


class TopicKind(StrEnum):
    UP = "up"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class KitTopic:
    kit_id: int
    kind: TopicKind


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """Topic names under one root; tests use a root of their own per test."""

    root: str = DEFAULT_TOPIC_ROOT

    def up(self, kit_id: int) -> str:
        return f"{self.root}/kits/{kit_id}/up"

    def status(self, kit_id: int) -> str:
        return f"{self.root}/kits/{kit_id}/status"

    def up_filter(self) -> str:
        return f"{self.root}/kits/+/up"

    def status_filter(self) -> str:
        return f"{self.root}/kits/+/status"

    def shared(self, topic_filter: str, group: str = DEFAULT_SHARE_GROUP) -> str:
        """A shared subscription: each message goes to one member of ``group``."""
        return f"$share/{group}/{topic_filter}"

    def subscriptions(self, share_group: str | None) -> list[str]:
        """What ingest subscribes to: shared by ``share_group``, or plain when it is empty.

        A plain subscription suits a single ingest process: Mosquitto 2.0.11 loses
        part of a shared subscription's persistent queue across a broker restart
        (measured: tests/faults/test_mosquitto_restart.py), a plain one loses nothing.
        """
        filters = [self.up_filter(), self.status_filter()]
        if not share_group:
            return filters
        return [self.shared(f, share_group) for f in filters]

    def parse(self, topic: str) -> KitTopic:
        """The kit and kind a topic names; :class:`TopicError` saying what is wrong if it
        names none under this root."""
        return _parse(self.root, topic)


# A kit publishes on the same two topics all day: parsed once, not once a message (the
# ingest process parses each message's topic twice, about 2 µs each time). Bounded: a
# flood of distinct topics evicts the oldest, and bad topics raise, which is not cached.
@functools.lru_cache(maxsize=1 << 16)
def _parse(root: str, topic: str) -> KitTopic:
    prefix = f"{root}/kits/"
    if not topic.startswith(prefix):
        raise TopicError(f"topic {topic!r} is not under {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 2:
        raise TopicError(f"topic {topic!r} should be {prefix}<kit_id>/<up|status>")
    raw_id, raw_kind = parts
    if not raw_id.isdigit() or len(raw_id) > 10 or int(raw_id) > _MAX_KIT_ID:
        raise TopicError(f"topic {topic!r}: kit id {raw_id!r} is not a 32-bit decimal number")
    try:
        kind = TopicKind(raw_kind)
    except ValueError:
        raise TopicError(f"topic {topic!r}: unknown message kind {raw_kind!r}") from None
    return KitTopic(int(raw_id), kind)
