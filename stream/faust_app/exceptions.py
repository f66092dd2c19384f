"""Errors of the distributed runtime.

    BikesenseError
    └── DistributedError
        ├── EnvelopeError   bytes on a bikesense topic that are not what its layout says
        ├── KafkaError      the broker could not be reached, or did not take a produce
        └── TopicLayoutError  a bikesense topic exists with another partition count

``EnvelopeError`` is a ``ValueError`` too: it is always about bytes someone handed in.
"""

from __future__ import annotations

from bikesense.exceptions import BikesenseError


class DistributedError(BikesenseError):
    """Base of the errors of ``stream.faust_app``."""


class EnvelopeError(DistributedError, ValueError):
    """A message value or kit state is not in the layout it claims (magic, size, JSON)."""


class KafkaError(DistributedError):
    """Kafka is unreachable or refused a message; the message says which broker."""


class TopicLayoutError(DistributedError):
    """A bikesense topic exists with a partition count other than the runtime's.

    Keys (kits, cells) are spread over partitions by count: a topic with another
    count would file a kit's state in one partition and its readings in another.
    """
