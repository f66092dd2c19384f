"""paho's client reading and writing the broker's socket in blocks, for a subscriber.

paho 2.x reads each packet with three or more ``recv`` calls and a ``select``, and
writes each packet (a PUBACK per message, for a manually acking subscriber) with a
``send`` of its own after a wake of its network thread. :class:`ReadAheadClient` is
the paho client ``ingest.mqtt.MqttSubscriber`` uses: many packets per system call
each way (bench/RESULTS.md, "Ingest CPU per reading").
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

#: What one read from the broker's socket takes at most (``ReadAhead``).
READ_AHEAD_BYTES = 1 << 16
#: Packets paho's network thread reads before it looks at its other duties (writing the
#: acks, the keep-alive): ``ReadAheadClient.loop_read``.
PACKETS_PER_READ = 64


class ReadAhead:
    """The broker's socket, read ``READ_AHEAD_BYTES`` at a time.

    paho reads a packet with three or more ``recv`` calls (its first byte, each byte
    of its length, the rest) and selects on the socket before each packet: on
    10-reading frames those system calls, and the GIL given up and taken back around
    each, were about half of paho's thread's CPU (bench/RESULTS.md, "Ingest CPU per
    reading"). Here one ``recv`` serves many packets; :meth:`pending` tells paho that
    bytes are waiting without the socket being readable, as an SSL socket's does,
    and paho's loop reads on without waiting in ``select``.

    Writes likewise: paho sends each packet on its own (a PUBACK per message, a
    system call and a TCP segment each); :meth:`send` gathers them, and
    :meth:`flush`, at the end of each of paho's writes, sends them at once. What the
    socket does not take then stays, in order, for the next flush (paho then asks to
    write again: ``ReadAheadClient.want_write``), as paho's own unsent packets do.
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


class ReadAheadClient(mqtt.Client):
    """paho's client reading through :class:`ReadAhead`, several packets a loop.

    paho's loop reads one packet, then writes, checks its keep-alive and selects
    again; the bytes read ahead hold many packets, so :meth:`loop_read` takes up to
    ``PACKETS_PER_READ`` of them before going back to that loop; :meth:`_packet_write`
    flushes the packets paho wrote. It overrides paho's private ``_create_socket`` and
    ``_packet_write`` (paho 2.x): the one place the socket is made, the one place it is
    written to.
    """

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else ReadAhead(sock)

    def _packet_write(self) -> MQTTErrorCode:
        rc = super()._packet_write()
        sock = self._sock
        if isinstance(sock, ReadAhead):
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
        return super().want_write() or (isinstance(sock, ReadAhead) and sock.unsent > 0)

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
            # Put back unless paho made a new pair meanwhile (it closed this one then).
            if self._sockpairW is None:
                self._sockpairW = wake
        if wake is not None and queued and self._sockpairW is wake:
            with contextlib.suppress(OSError):  # full (BlockingIOError) or closed
                wake.send(b"0")
        return queued

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(PACKETS_PER_READ - 1):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, ReadAhead):
                break
            if not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc
