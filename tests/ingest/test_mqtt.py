"""The paho boundary's socket (ingest/mqtt.py, ingest/read_ahead.py): many packets per
system call each way, nothing lost or reordered."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import InboundMessage, MqttSubscriber
from ingest.read_ahead import READ_AHEAD_BYTES, ReadAhead


class _CountingSocket:
    """A socket that counts the ``recv`` calls made on it."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.recvs = 0
        self.sends = 0

    def recv(self, size: int) -> bytes:
        self.recvs += 1
        data: bytes = self.sock.recv(size)
        return data

    def send(self, data: bytes) -> int:
        self.sends += 1
        sent: int = self.sock.send(data)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_small_reads_are_served_from_one_large_one() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        counting = _CountingSocket(b)
        reader = ReadAhead(counting)
        a.sendall(b"\x30\x05hello" + b"\x30\x03abc")
        assert reader.recv(1) == b"\x30"
        assert reader.pending() == 11
        assert reader.recv(1) == b"\x05"
        assert reader.recv(5) == b"hello"
        assert reader.recv(1) == b"\x30"
        # A read larger than what is left gets what is left, as a socket's would.
        assert reader.recv(1) == b"\x03"
        assert reader.recv(100) == b"abc"
        assert reader.pending() == 0
        assert counting.recvs == 1
        with pytest.raises(BlockingIOError):
            reader.recv(1)
        a.sendall(b"xyz")
        assert reader.recv(READ_AHEAD_BYTES) == b"xyz"
        a.close()
        assert reader.recv(1) == b""
        assert reader.fileno() == b.fileno()


@pytest.mark.mqtt
def test_subscriber_reads_many_messages_per_socket_read(
    mqtt_url: str, unique_topic_prefix: str
) -> None:
    topic = f"{unique_topic_prefix}/kits/7/up"
    got: list[InboundMessage] = []
    release = threading.Event()

    def deliver(message: InboundMessage) -> None:
        # Held up at the first message, as a full queue would: the rest pile up in the
        # socket, and are then read many to a recv.
        release.wait(10)
        got.append(message)

    subscriber = MqttSubscriber(
        mqtt_url,
        client_id=f"{unique_topic_prefix}-sub",
        subscriptions=[topic],
        deliver=deliver,
    )
    subscriber.start()
    try:
        sock = subscriber._client._sock
        assert isinstance(sock, ReadAhead)
        counting = _CountingSocket(sock._sock)
        sock._sock = counting
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        host, port = subscriber.address.host, subscriber.address.port
        publisher.connect(host, port)
        publisher.loop_start()
        payloads = [f"message {i:04d}".encode() * 20 for i in range(300)]
        infos = [publisher.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
        publisher.disconnect()
        publisher.loop_stop()
        time.sleep(0.2)
        release.set()
        # The broker's in-flight window (100 in bikesense's configuration) is what came.
        deadline = time.monotonic() + 10
        while len(got) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        wakes = _CountingSocket(subscriber._client._sockpairW)
        subscriber._client._sockpairW = wakes  # type: ignore[assignment]
        window = got[:100]
        assert subscriber.ack(window) == 100
        # One wake of paho's thread for them all (paho alone wakes it once an ack).
        assert wakes.sends == 1
        # Acked as they come: the broker holds back what passes its in-flight window.
        acked = 100
        deadline = time.monotonic() + 10
        while acked < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.01)
            arrived = got[acked:]
            acked += subscriber.ack(arrived)
        assert [m.payload for m in got] == payloads
        assert acked == len(payloads)
        # paho alone reads each packet with three recv calls or more.
        assert counting.recvs < len(payloads) / 4
    finally:
        release.set()
        subscriber.stop()
    # Every ack reached the broker (the last ones sent on disconnect): the persistent
    # session has nothing to deliver again.
    again: list[InboundMessage] = []
    resumed = MqttSubscriber(
        mqtt_url,
        client_id=f"{unique_topic_prefix}-sub",
        subscriptions=[topic],
        deliver=again.append,
    )
    resumed.start()
    try:
        time.sleep(0.5)
        assert again == []
    finally:
        resumed.stop()


def test_writes_are_gathered_and_sent_at_once_in_order() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        writer = ReadAhead(b)
        assert writer.send(b"\x40\x02\x00\x01") == 4
        assert writer.send(bytearray(b"\x40\x02\x00\x02")) == 4
        assert writer.unsent == 8
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(100)  # nothing sent yet
        writer.flush()
        assert writer.unsent == 0
        assert a.recv(100) == b"\x40\x02\x00\x01\x40\x02\x00\x02"
        # A full socket keeps the rest for the next flush, in order.
        chunk = bytes(range(256)) * 64
        while not writer.unsent:
            writer.send(chunk)
            with contextlib.suppress(BlockingIOError):
                writer.flush()
        received = bytearray()
        while writer.unsent:
            with contextlib.suppress(BlockingIOError):
                received += a.recv(1 << 20)
            with contextlib.suppress(BlockingIOError):
                writer.flush()
        with contextlib.suppress(BlockingIOError):
            while data := a.recv(1 << 20):
                received += data
        assert len(received) % len(chunk) == 0
        assert received == chunk * (len(received) // len(chunk))
        # Closing sends what is left first.
        writer.send(b"\xe0\x00")
        writer.close()
        a.setblocking(True)
        assert a.recv(100) == b"\xe0\x00"
