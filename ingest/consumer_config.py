"""How the MQTT consumer (``ingest.consumer``) runs: broker, batch sizes, bounds, back-off.

A value object: the edge that starts a runtime builds it from the settings
(``bikesense/runtimes.py``, whose ``EmbeddedConfig`` takes its defaults from here, so
each is written once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.topics import DEFAULT_SHARE_GROUP, TopicLayout
from ingest.validation import AdmissionRules


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    mqtt_url: str
    client_id: str = "bikesense-stream-1"
    topic_root: str = TopicLayout().root
    share_group: str = DEFAULT_SHARE_GROUP
    #: Messages taken into one batch at most; a frame holds up to a few hundred readings.
    max_batch_messages: int = 1000
    #: How long to wait for more messages once one arrived, before preparing them.
    linger_s: float = 0.05
    #: Bounds of the hand-over queue from paho's thread, in messages and in payload
    #: bytes. When either is reached, paho's thread blocks (back-pressure to the broker),
    #: it never drops. 32 MiB holds 4,000 frames of 8 KiB (about 300 readings each) or
    #: 800 of the largest the protocol allows (ingest.limits).
    queue_size: int = 4000
    queue_bytes: int = 32 * 1024 * 1024
    #: A batch also stops growing at this many payload bytes (with the batches in
    #: hand, ``(writers + 1)`` of them, this bounds what is between queue and commit).
    max_batch_bytes: int = 16 * 1024 * 1024
    #: Prepare the next batch while one is committed (the default); False: collect,
    #: prepare, commit and ack one batch at a time, with one writer.
    overlap_stages: bool = True
    #: While one batch is being written, another writer takes the next batch once it
    #: is full or once it has waited this long, whichever comes first.
    batch_wait_s: float = 0.5
    rules: AdmissionRules = field(default_factory=AdmissionRules)
    #: Back-off while a service is away.
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.queue_bytes < 1 or self.max_batch_bytes < 1:
            msg = "queue_size, queue_bytes and max_batch_bytes must be positive"
            raise ValueError(msg)
        if self.max_batch_messages < 1:
            msg = f"max_batch_messages must be at least 1 (got {self.max_batch_messages})"
            raise ValueError(msg)
