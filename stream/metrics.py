"""Prometheus metrics of a runtime process, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames_accepted = Counter("bikesense_frames_accepted", "Frames accepted", registry=r)
        self.frames_rejected = Counter("bikesense_frames_rejected", "Frames rejected, by reason",
                                       ["reason"], registry=r)
        self.readings_stored = Counter("bikesense_readings_stored",
                                       "Readings newly stored", registry=r)
        self.readings_duplicate = Counter("bikesense_readings_duplicate",
                                          "Readings received again and ignored", registry=r)
        self.messages_acked = Counter("bikesense_mqtt_messages_acked",
                                      "MQTT messages acknowledged after commit", registry=r)
        self.backpressure_waits = Counter("bikesense_backpressure_waits",
                                          "Times the MQTT thread waited on a full queue",
                                          registry=r)
        self.database_errors = Counter("bikesense_database_errors",
                                       "Batches retried because the database was away", registry=r)
