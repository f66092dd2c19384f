"""What the fault tests share: a registered fleet, its frames, `bikesense ingest` as a child.

The frames are built with the wire encoder, one per kit and sequence number, so
that every reading's identity is known and the exact count stored can be
compared with what was published.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from firmware_protocol import empty_readings, encode_readings
from storage.kits import MasterKey, register_kit
from tests.runtime_harness import scalar

PER_FRAME = 10


def register_fleet(url: str, kits: tuple[int, ...]) -> tuple[MasterKey, dict[int, bytes]]:
    master = MasterKey.generate()
    with psycopg.connect(url, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in kits}
    return master, secrets


def good_frames(secrets: dict[int, bytes], frames_per_kit: int) -> list[tuple[int, bytes]]:
    """Frames of 10 readings, kits interleaved, ending a minute ago (none in the future)."""
    start_ms = int(time.time() * 1000) - (frames_per_kit * PER_FRAME + 60) * 1000
    out = []
    for seq in range(frames_per_kit):
        for kit, secret in sorted(secrets.items()):
            r = empty_readings(PER_FRAME)
            step = seq * PER_FRAME + np.arange(PER_FRAME)
            r["ts_ms"] = start_ms + step * 1000
            r["lat_deg"] = 52.09 + kit * 1e-3 + step * 1e-5
            r["lon_deg"] = 5.12
            r["gnss_fix"], r["hdop"], r["speed_mps"], r["interval_ms"] = 2, 1.0, 4.0, 1000
            r["pm25_ugm3"] = 8.0 + step % 7 * 0.4
            out.append((kit, encode_readings(kit, 1, seq, r, secret)))
    return out


def stored(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM readings"))


def assert_exact(url: str, expected: int) -> None:
    """Exactly ``expected`` readings, each identity once."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
        ).fetchone()
    assert row == (expected, expected)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class KitPublisher:
    """A kit-like publisher: persistent session, QoS 1, reconnects by itself.

    ``url`` may carry a login (``mqtt://user:password@host:port``); ``sent`` and
    ``acked`` count the messages handed to paho and the PUBACKs received.
    """

    def __init__(self, url: str, client_id: str) -> None:
        self.sent = 0
        self.acked = 0
        self._lock = threading.Lock()
        parts = urlsplit(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        self.client.max_inflight_messages_set(50)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_publish = self._on_publish
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        # While the broker is away paho keeps QoS 1 messages and sends them on reconnect.
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), info.rc
        self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # socket and wake-up pair, as ingest.mqtt does
