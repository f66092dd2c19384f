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

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from ingest.exceptions import BrokerError
from ingest.limits import MAX_PAYLOAD_BYTES

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


#: What one read from the broker's socket takes at most (``_ReadAhead``).
READ_AHEAD_BYTES = 1 << 16
#: Packets paho's network thread reads before it looks at its other duties (writing the
#: acks, the keep-alive): ``_ReadAheadClient.loop_read``.
PACKETS_PER_READ = 64


class _ReadAhead:
    """The broker's socket, read ``READ_AHEAD_BYTES`` at a time.

    paho reads a packet with three or more ``recv`` calls (its first byte, each byte
    of its length, the rest) and selects on the socket before each packet: on
    10-reading frames those system calls, and the GIL given up and taken back around
    each, were most of paho's thread's CPU (bench/RESULTS.md, "Ingest CPU per
    reading"). Here one ``recv`` serves many packets; :meth:`pending` tells paho that
    bytes are waiting without the socket being readable, as an SSL socket's does,
    and paho's loop reads on without waiting in ``select``.

    Writes likewise: paho sends each packet on its own (a PUBACK per message, a
    system call and a TCP segment each); :meth:`send` gathers them, and
    :meth:`flush`, at the end of each of paho's writes, sends them at once. What the
    socket does not take then stays, in order, for the next flush (paho then asks to
    write again: ``_ReadAheadClient.want_write``), as paho's own unsent packets do.
    """

    __slots__ = ("_at", "_buffer", "_sock", "_unsent")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer: bytes = b""
        self._at = 0
        self._unsent = bytearray()

    def recv(self, size: int) -> bytes:
        buffer, at = self._buffer, self._at
        if at >= len(buffer):
            # BlockingIOError (nothing to read) and b"" (closed) reach paho as they are.
            buffer = bytes(self._sock.recv(READ_AHEAD_BYTES))
            if not buffer:
                return buffer
            self._buffer, at = buffer, 0
        if at == 0 and size >= len(buffer):
            self._at = len(buffer)
            return buffer
        data = buffer[at : at + size]
        self._at = at + len(data)
        return data

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) - self._at + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        self._unsent += data
        return len(data)

    def flush(self) -> None:
        """Send what was gathered, as much as the socket takes (``BlockingIOError`` if
        none: the rest waits for the next flush)."""
        if self._unsent:
            sent = self._sock.send(self._unsent)
            del self._unsent[:sent]

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def close(self) -> None:
        # paho closes right after writing DISCONNECT: send it, and any acks before it.
        with contextlib.suppress(OSError):
            self.flush()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _ReadAheadClient(mqtt.Client):
    """paho's client reading through :class:`_ReadAhead`, several packets a loop.

    paho's loop reads one packet, then writes, checks its keep-alive and selects
    again; the bytes read ahead hold many packets, so :meth:`loop_read` takes up to
    ``PACKETS_PER_READ`` of them before going back to that loop; :meth:`_packet_write`
    flushes the packets paho wrote. It overrides paho's private ``_create_socket`` and
    ``_packet_write`` (paho 2.x): the one place the socket is made, the one place it is
    written to.
    """

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _ReadAhead(sock)

    def _packet_write(self) -> MQTTErrorCode:
        rc = super()._packet_write()
        sock = self._sock
        if isinstance(sock, _ReadAhead):
            try:
                sock.flush()
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return MQTTErrorCode.MQTT_ERR_AGAIN if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else rc
            except OSError as exc:
                log.warning("could not write to the MQTT broker: %s", exc)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return rc

    def want_write(self) -> bool:
        sock = self._sock
        return super().want_write() or (isinstance(sock, _ReadAhead) and sock.unsent > 0)

    def ack_all(self, acks: Sequence[tuple[int, int]]) -> int:
        """paho's :meth:`ack` of each ``(mid, qos)``, in order, waking paho's thread once
        for them all; returns how many were queued.

        paho wakes its thread for each packet it queues (a byte on its socket pair: a
        system call here, and a turn of its loop there that writes one PUBACK). Its wake
        socket is held back while the acks are queued and used once after. Only
        ``loop_start`` and ``disconnect`` replace it, which the subscriber never does
        while acking; a packet paho's own thread queues meanwhile needs no wake.
        """
        wake, self._sockpairW = self._sockpairW, None
        try:
            queued = sum(self.ack(mid, qos) == MQTTErrorCode.MQTT_ERR_SUCCESS for mid, qos in acks)
        finally:
            self._sockpairW = wake
        if wake is not None and queued:
            with contextlib.suppress(BlockingIOError):
                wake.send(b"0")
        return queued

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(PACKETS_PER_READ - 1):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, _ReadAhead):
                break
            if not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc


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
    class ``kind`` (``_ReadAheadClient`` for a subscriber that receives many messages)."""
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
            self.address, client_id, persistent=True, manual_ack=True, kind=_ReadAheadClient
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
