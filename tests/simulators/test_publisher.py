"""Publishing to the real Mosquitto at QoS 1: everything arrives, whole and once per publish."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.exceptions import PublishError
from simulators.fleet import Kind
from simulators.publisher import MqttPublisher
from simulators.runner import pump
from tests.simulators.simulated import Simulated

pytestmark = pytest.mark.mqtt


class Subscriber:
    """A paho QoS 1 subscriber that keeps (topic, payload, retain) of what it receives."""

    def __init__(self, url: str, topic_filter: str) -> None:
        parts = urlsplit(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-test-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self._client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.02)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # socket and wake-up pair, as ingest.mqtt does


@contextmanager
def subscribed(url: str, topic_filter: str) -> Iterator[Subscriber]:
    sub = Subscriber(url, topic_filter)
    try:
        yield sub
    finally:
        sub.close()


def test_a_run_arrives_whole(
    faulty_run: Simulated, mqtt_url: str, unique_topic_prefix: str
) -> None:
    root = f"{unique_topic_prefix}/bikesense/v1"
    pubs = faulty_run.publications
    with subscribed(mqtt_url, f"{root}/kits/#") as sub:
        with MqttPublisher(mqtt_url, topic_root=root, max_inflight=50) as publisher:
            stats = pump(pubs, [publisher], speed=None)
        assert publisher.acknowledged == publisher.published == len(pubs) == stats.publications
        sub.wait_for(len(pubs))
        time.sleep(0.2)  # anything extra would show up now
    sent = Counter((p.topic(root), p.payload) for p in pubs)
    got = Counter((topic, payload) for topic, payload, _ in sub.messages)
    assert got == sent
    assert any(p.kind == Kind.STATUS for p in pubs)

    # The last status of every kit stays retained for whoever subscribes later.
    with subscribed(mqtt_url, f"{root}/kits/+/status") as late:
        late.wait_for(len(faulty_run.fleet.kits), timeout_s=10)
        time.sleep(0.2)
    last = {p.topic(root): p.payload for p in pubs if p.kind == Kind.STATUS}
    assert {t: p for t, p, retained in late.messages if retained} == last


def test_unreachable_broker_is_a_clear_error() -> None:
    publisher = MqttPublisher("mqtt://127.0.0.1:1", connect_timeout_s=2)
    with pytest.raises(PublishError, match=r"127\.0\.0\.1:1"):
        publisher.connect()
    publisher.abort()


def test_publishing_after_close_is_refused(mqtt_url: str, unique_topic_prefix: str) -> None:
    publisher = MqttPublisher(mqtt_url, topic_root=unique_topic_prefix)
    publisher.connect()
    publisher.publish(f"{unique_topic_prefix}/x", b"1")
    publisher.close()
    assert publisher.acknowledged == 1
    with pytest.raises(PublishError, match="closed"):
        publisher.publish(f"{unique_topic_prefix}/x", b"2")
