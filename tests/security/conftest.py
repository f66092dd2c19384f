"""An authenticated broker for the attack tests: kits and ingest on separate listeners."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bikesense.brokerauth import (
    INGEST_USER,
    write_kit_accounts,
    write_service_accounts,
)
from bikesense.services import BrokerAccounts, MosquittoBroker
from ingest.broker_auth import kit_mqtt_password
from ingest.topics import TopicLayout

INGEST_PASSWORD = "ingest-" + uuid.uuid4().hex


@dataclass
class SecuredBroker:
    """A running broker with kit accounts for ``secrets``; ``set_kits`` rewrites and reloads."""

    broker: MosquittoBroker
    accounts: BrokerAccounts
    layout: TopicLayout
    secrets: dict[int, bytes] = field(default_factory=dict)

    @property
    def kit_port(self) -> int:
        return self.broker.port

    @property
    def service_port(self) -> int:
        assert self.broker.service_port is not None
        return self.broker.service_port

    def kit_login(self, kit_id: int) -> tuple[str, str]:
        return str(kit_id), kit_mqtt_password(self.secrets[kit_id])

    def set_kits(self, secrets: dict[int, bytes]) -> None:
        write_kit_accounts(self.accounts, secrets, self.layout)
        self.broker.reload()


@pytest.fixture
def secured_broker() -> Iterator[SecuredBroker]:
    root = Path(tempfile.mkdtemp(prefix="bikesense-secured-"))
    root.chmod(0o755)
    layout = TopicLayout(f"sec-{uuid.uuid4().hex[:8]}/bikesense/v1")
    secrets = {k: uuid.uuid4().bytes * 2 for k in (7, 8)}
    accounts = BrokerAccounts(root / "broker" / "auth")
    write_kit_accounts(accounts, secrets, layout)
    write_service_accounts(accounts, INGEST_PASSWORD, layout)
    broker = MosquittoBroker(root / "broker", accounts=accounts)
    broker.start()
    try:
        yield SecuredBroker(broker, accounts, layout, secrets)
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


class Client:
    """A paho client that records its CONNACK, messages, subscriptions and disconnects."""

    def __init__(
        self,
        port: int,
        login: tuple[str, str] | None,
        *,
        client_id: str = "",
        persistent: bool = False,
        will_topic: str | None = None,
    ) -> None:
        self.connack: int | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self.disconnects = 0
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:10]}",
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        if login is not None:
            self.client.username_pw_set(*login)
        if will_topic is not None:
            self.client.will_set(
                will_topic, b'{"battery_pct": 1, "firmware_version": "EVIL"}', qos=1, retain=True
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(60, 120)  # no quiet reconnects during a test
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        self.answered.wait(10)

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self.connack = int(getattr(reason, "value", 0))
        if self.connack == 0:
            self.connected.set()
        self.answered.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, _r: object, _p: object
    ) -> None:
        self.disconnects += 1
        self.connected.clear()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, codes: list[object], _p: object
    ) -> None:
        self.granted += [int(getattr(c, "value", 0)) for c in codes]
        self.subscribed.set()

    @property
    def accepted(self) -> bool:
        return self.connack == 0

    def subscribe(self, *topics: str) -> None:
        self.subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(10), f"no SUBACK for {topics}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()

    def drop(self) -> None:
        """Go away without DISCONNECT, as a kit whose network died: the broker sends its will."""
        self.client.loop_stop()
        self.client._reset_sockets()


def wait_for(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:g} s")
        time.sleep(0.05)


def ingest_login() -> tuple[str, str]:
    return INGEST_USER, INGEST_PASSWORD
