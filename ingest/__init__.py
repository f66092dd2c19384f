"""Ingest: MQTT in, authenticated and validated readings out, acked only once durable."""
