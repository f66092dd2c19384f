"""Payloads larger than any frame: refused by the broker, and by ingest behind a broker that
does not refuse them, in bounded memory and bounded storage.

The protocol's largest message is a readings frame of 1,024 readings, 38,960
bytes (docs/protocol.md, "Limits"; ``ingest.limits``).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bikesense.services import MosquittoBroker
from ingest.limits import MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES
from simulators.publisher import MqttPublisher
from storage.rejects import MAX_REJECT_PAYLOAD_BYTES
from tests.faults.fault_support import (
    PER_FRAME,
    assert_exact,
    good_frames,
    register_fleet,
    rss_kib,
    stored,
)
from tests.runtime_harness import ingest_process, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

KITS = (51, 52)
BIG_BYTES = 2 * 1024 * 1024
BIG_COUNT = 150  # 300 MiB of payload in all
#: Ingest peaks at 80-100 MiB in these tests when it keeps no more than the protocol's
#: largest frame of each payload; the big payloads alone add up to 300 MiB, so holding
#: even two thirds of them at once breaks the bound.
RSS_BOUND_KIB = 200 * 1024


def _own_broker(max_packet_bytes: int | None) -> Iterator[MosquittoBroker]:
    root = Path(tempfile.mkdtemp(prefix="bikesense-fault-size-"))
    root.chmod(0o755)
    broker = MosquittoBroker(root / "mosquitto", max_packet_bytes=max_packet_bytes)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def limited_broker() -> Iterator[MosquittoBroker]:
    """The broker as bikesense configures it."""
    yield from _own_broker(MAX_PACKET_BYTES)


@pytest.fixture
def unlimited_broker() -> Iterator[MosquittoBroker]:
    """A broker someone configured without the packet limit."""
    yield from _own_broker(None)


class _Client:
    def __init__(self, port: int, client_id: str) -> None:
        self.received: list[int] = []
        self.acked: set[int] = set()
        self.disconnects = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, what=f"{client_id} to connect")

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.received.append(len(message.payload))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self.acked.add(mid)

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnects += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


def test_broker_refuses_a_packet_larger_than_any_frame_and_never_acks_it(
    limited_broker: MosquittoBroker,
) -> None:
    topic = "bikesense/v1/kits/51/up"
    reader = _Client(limited_broker.port, "size-reader")
    writer = _Client(limited_broker.port, "size-writer")
    try:
        reader.client.subscribe(topic, qos=1)
        time.sleep(0.3)
        largest = writer.client.publish(topic, bytes(MAX_PAYLOAD_BYTES), qos=1)
        wait_for(lambda: largest.mid in writer.acked, what="the largest frame to be acked")
        wait_for(lambda: reader.received == [MAX_PAYLOAD_BYTES], what="the largest frame")
        too_big = writer.client.publish(topic, bytes(MAX_PACKET_BYTES), qos=1)
        wait_for(
            lambda: writer.disconnects > 0,
            timeout_s=10,
            what="the broker to disconnect the client that sent an oversized packet",
        )
        time.sleep(0.5)
        assert too_big.mid not in writer.acked  # the kit knows it was not delivered
        assert reader.received == [MAX_PAYLOAD_BYTES]
    finally:
        writer.close()
        reader.close()


def test_ingest_refuses_oversized_payloads_keeps_a_bounded_prefix_in_bounded_memory(
    migrated_database_url: str,
    unlimited_broker: MosquittoBroker,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    master, secrets = register_fleet(url, KITS)
    good = good_frames(secrets, 100)  # 200 frames, 2,000 readings
    rng = np.random.default_rng(7)
    just_over = MAX_PAYLOAD_BYTES + 1
    root = f"{unique_topic_prefix}/bikesense/v1"
    with ingest_process(
        url, unlimited_broker.url, master, root, f"{unique_topic_prefix}-ingest"
    ) as proc:
        peak = [rss_kib(proc.pid)]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], rss_kib(proc.pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            big = rng.bytes(BIG_BYTES)  # random: PostgreSQL cannot compress it away
            with MqttPublisher(
                unlimited_broker.url, topic_root=root, max_inflight=500
            ) as publisher:
                for i, (kit, payload) in enumerate(good):
                    publisher.publish(f"{root}/kits/{kit}/up", payload)
                    if i < BIG_COUNT:
                        # Each one different, so no two share memory anywhere.
                        publisher.publish(f"{root}/kits/{kit}/up", i.to_bytes(4) + big[4:])
                publisher.publish(f"{root}/kits/{KITS[0]}/up", bytes(just_over))
                publisher.publish(f"{root}/kits/{KITS[0]}/status", bytes(BIG_BYTES))
            expected_rejects = BIG_COUNT + 2
            wait_for(
                lambda: (
                    stored(url) == len(good) * PER_FRAME
                    and scalar(url, "SELECT count(*) FROM rejected_frames") == expected_rejects
                ),
                timeout_s=90,
                what=f"every frame handled (stored {stored(url)})",
            )
        finally:
            done.set()
            watcher.join()
        assert proc.poll() is None, "ingest died"
    assert_exact(url, len(good) * PER_FRAME)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT reason, octet_length(payload), detail, kit_id FROM rejected_frames ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == ["too_large"] * expected_rejects
    assert {r[1] for r in rows} == {MAX_REJECT_PAYLOAD_BYTES}
    assert MAX_REJECT_PAYLOAD_BYTES == MAX_PAYLOAD_BYTES
    sizes = sorted(int(r[2].split("payload of ")[1].split(" bytes")[0]) for r in rows)
    assert sizes == [just_over] + [BIG_BYTES] * (BIG_COUNT + 1)
    assert {r[3] for r in rows} <= set(KITS)
    assert peak[0] < RSS_BOUND_KIB, f"ingest grew to {peak[0] // 1024} MiB"
