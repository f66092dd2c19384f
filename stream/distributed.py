"""The distributed runtime's public face: the faust app factory and Kafka-mode ingest.

The parts live in :mod:`stream.faust_app` (codec, per-event steps, the app,
ingest); docs/deployment.md shows how they run together.
"""

from __future__ import annotations

from stream.faust_app.app import (
    DistributedConfig,
    StreamApp,
    create_app,
    default_store,
    ensure_app_topics,
)
from stream.faust_app.ingest import KafkaIngest, run_kafka_ingest

__all__ = [
    "DistributedConfig",
    "KafkaIngest",
    "StreamApp",
    "create_app",
    "default_store",
    "ensure_app_topics",
    "run_kafka_ingest",
]
