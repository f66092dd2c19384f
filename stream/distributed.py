"""The distributed runtime's public face: the faust app factory.

The parts live in :mod:`stream.faust_app` (codec, per-event steps, the app, the
Kafka handler of ``bikesense ingest --to kafka``, which ``bikesense.runtimes``
puts behind the MQTT consumer); docs/deployment.md shows how they run together.
"""

from __future__ import annotations

from stream.faust_app.app import (
    DistributedConfig,
    StreamApp,
    create_app,
    default_store,
    ensure_app_topics,
)

__all__ = [
    "DistributedConfig",
    "StreamApp",
    "create_app",
    "default_store",
    "ensure_app_topics",
]
