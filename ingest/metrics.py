"""Prometheus metrics of a runtime process, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames_accepted = Counter("bikesense_frames_accepted", "Frames accepted", registry=r)
        self.frames_rejected = Counter(
            "bikesense_frames_rejected", "Frames rejected, by reason", ["reason"], registry=r
        )
        self.readings_stored = Counter(
            "bikesense_readings_stored", "Readings newly stored", registry=r
        )
        self.readings_duplicate = Counter(
            "bikesense_readings_duplicate", "Readings received again and ignored", registry=r
        )
        self.messages_acked = Counter(
            "bikesense_mqtt_messages_acked", "MQTT messages acknowledged after commit", registry=r
        )
        self.backpressure_waits = Counter(
            "bikesense_backpressure_waits",
            "Times the MQTT thread waited on a full queue",
            registry=r,
        )
        self.database_errors = Counter(
            "bikesense_database_errors", "Batches retried because the database was away", registry=r
        )
        self.writes_in_flight = Gauge(
            "bikesense_writes_in_flight",
            "Batches taken by the write stage and not yet acked",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "bikesense_batch_write_seconds",
            "From taking a batch to acking it: aggregating, encoding, the transaction",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.batch_messages = Histogram(
            "bikesense_batch_messages",
            "MQTT messages per batch written",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self.ack_turn_waits = Counter(
            "bikesense_ack_turn_waits",
            "Batches committed before the batch before them was acked (two writers)",
            registry=r,
        )
