"""The paho-mqtt boundary: convert, hand over, and acknowledge only when told.

The paho callback does one thing: turn the message into an
:class:`InboundMessage` and pass it to ``deliver``. ``deliver`` may block
(the runtime's bounded queue is full): that stalls paho's network thread,
and since messages are acknowledged manually, the broker stops sending once
its in-flight window for us is full. That is the back-pressure; nothing is
dropped. Messages are acknowledged with :meth:`MqttSubscriber.ack` only after
what they carried is durable.

MQTT 3.1.1 with a persistent session (``clean_session=False``): paho's v5 path
was measured at about twice the CPU per message (docs/design.md, "Measured
facts"), and Mosquitto honours ``$share/`` subscriptions from 3.1.1 clients
(docs/ingest.md, "MQTT 3.1.1, not 5").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.exceptions import BrokerError
from ingest.limits import MAX_PAYLOAD_BYTES
from ingest.read_ahead import ReadAheadClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One MQTT message as ingest sees it, detached from paho."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    #: Which connection delivered it; acks for an older connection are not sent.
    generation: int
    #: The payload's size on the wire when it was larger than any frame may be
    #: (``ingest.limits``): ``payload`` then holds only its first ``MAX_PAYLOAD_BYTES``.
    truncated_from: int | None = None

    @property
    def size_bytes(self) -> int:
        """What this message holds in memory, for the consumer's queue bound."""
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise BrokerError(f"MQTT URL must look like mqtt://host:1883 (got {url!r})")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


_C = TypeVar("_C", bound=mqtt.Client)


def new_client(
    address: BrokerAddress,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
    kind: type[_C] = mqtt.Client,  # type: ignore[assignment]
) -> _C:
    """A paho client configured the bikesense way (3.1.1, TLS when the URL says so), of
    class ``kind`` (``ReadAheadClient`` for a subscriber that receives many messages)."""
    client = kind(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


class MqttSubscriber:
    """A persistent-session subscriber that hands each message to ``deliver``.

    MQTT 3.1.1 has no way for a client to say how many unacknowledged messages
    it takes (5's "receive maximum"): that is the broker's ``max_inflight_messages``,
    which Mosquitto 2.0.11 enforces only until our first PUBACK (measured,
    docs/ingest.md). What stops the flow is ``deliver`` blocking: paho then stops
    reading the socket, and TCP flow control stops the broker.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: Sequence[str],
        deliver: Callable[[InboundMessage], None],
        keepalive_s: int = 30,
    ) -> None:
        self.address = BrokerAddress.from_url(url)
        self._subscriptions = list(subscriptions)
        self._deliver = deliver
        self._keepalive_s = keepalive_s
        self._client = new_client(
            self.address, client_id, persistent=True, manual_ack=True, kind=ReadAheadClient
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._acking = threading.Lock()

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error(
                "MQTT broker %s:%d refused the connection: %s",
                self.address.host,
                self.address.port,
                reason_code,
            )
            return
        with self._lock:
            self._generation += 1
        # Subscribing again is harmless with a persistent session and needed without one.
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        log.info(
            "connected to MQTT %s:%d (session present: %s)",
            self.address.host,
            self.address.port,
            flags.session_present,
        )
        self._connected.set()

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Any,
    ) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("MQTT broker refused our subscriptions %s: %s", self._subscriptions, refused)
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        self._connected.clear()
        if reason_code.value != 0:
            log.warning("lost the MQTT broker (%s); reconnecting", reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An oversized payload is cut here, before it is queued: behind a broker without
        # a packet limit, what ingest holds per message stays bounded all the same.
        size = len(message.payload)
        oversized = size > MAX_PAYLOAD_BYTES
        self._deliver(
            InboundMessage(
                topic=message.topic,
                payload=bytes(
                    message.payload[:MAX_PAYLOAD_BYTES] if oversized else message.payload
                ),
                mid=message.mid,
                qos=message.qos,
                received_ms=time.time_ns() // 1_000_000,
                generation=self._generation,
                truncated_from=size if oversized else None,
            )
        )

    # -- the runtime's side ----------------------------------------------------------------

    def start(self, *, wait_s: float = 10.0) -> None:
        """Connect (retrying in the background); return once the subscriptions are in place."""
        self._client.connect_async(self.address.host, self.address.port, self._keepalive_s)
        self._client.loop_start()
        if not self._subscribed.wait(wait_s):
            self.stop()
            state = "subscribe" if self._connected.is_set() else "connect"
            raise BrokerError(
                f"could not {state} to MQTT broker {self.address.host}:"
                f"{self.address.port} within {wait_s:.0f} s"
            )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, messages: Sequence[InboundMessage]) -> int:
        """Acknowledge ``messages`` (in order); returns how many acks were sent.

        A message from an earlier connection is not acked: its message id may
        name another message now. With a persistent session the broker sends
        it again, and the exactly-once writer makes the second copy a no-op.
        """
        current = self._generation
        with self._acking:
            return self._client.ack_all(
                [(m.mid, m.qos) for m in messages if m.qos != 0 and m.generation == current]
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho leaves its socket and wake-up socket pair to the garbage collector;
        # close them now (ResourceWarnings are errors in the tests, and leaks in a service).
        self._client._reset_sockets()
