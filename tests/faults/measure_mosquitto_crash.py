"""Measure what a Mosquitto crash (kill -9, not a clean stop) loses: not a test.

    .venv/bin/python -m tests.faults.measure_mosquitto_crash [autosave] [rate/s]

``autosave`` is ``5`` (the seconds of ``autosave_interval``, bikesense's setting) or
``changes<N>`` (``autosave_on_changes true``: a save after every N changes). A kit-like
publisher sends ``8 × rate`` QoS 1 messages; a subscriber with a persistent session
acks manually every 200 ms, as ingest acks after each commit; half-way the broker is
killed with SIGKILL and started again from its persistence file on the same port.
Lost: messages the broker acknowledged (PUBACK) to the publisher, which will therefore
never send them again, that the subscriber never received. docs/deployment.md has the
figures measured here.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bikesense.services import MosquittoBroker


class _Broker(MosquittoBroker):
    def __init__(self, directory: Path, autosave: str) -> None:
        super().__init__(directory)
        self.autosave = autosave

    def config_text(self) -> str:
        setting = (
            f"autosave_interval {self.autosave.removeprefix('changes')}\nautosave_on_changes true"
            if self.autosave.startswith("changes")
            else f"autosave_interval {self.autosave}"
        )
        return super().config_text().replace("autosave_interval 5", setting)


def main(autosave: str, rate: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bikesense-crash-"))
    root.chmod(0o755)
    broker = _Broker(root / "mosquitto", autosave)
    broker.start()
    lock = threading.Lock()
    received: set[int] = set()
    pending: list[tuple[int, int]] = []
    accepted: set[int] = set()
    numbers: dict[int, int] = {}
    acked_mids: list[int] = []
    stop = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with lock:
            received.add(int(message.payload[:8]))
            pending.append((message.mid, message.qos))

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe("t/#", 1)

    def on_publish(_c: mqtt.Client, _u: Any, mid: int, *_: Any) -> None:
        with lock:  # a PUBACK may come before publish() returned its mid: kept for later
            acked_mids.append(mid)

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        "crash-sub",
        clean_session=False,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    sub.reconnect_delay_set(1, 1)
    sub.on_message, sub.on_connect = on_message, on_connect
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()

    def ack_after_commit() -> None:
        while not stop.wait(0.2):
            with lock:
                batch, pending[:] = list(pending), []
            for mid, qos in batch:
                sub.ack(mid, qos)

    threading.Thread(target=ack_after_commit, daemon=True).start()
    pub = mqtt.Client(
        CallbackAPIVersion.VERSION2, "crash-pub", clean_session=False, protocol=mqtt.MQTTv311
    )
    pub.max_inflight_messages_set(100)
    pub.reconnect_delay_set(1, 1)
    pub.on_publish = on_publish
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    # Past the first autosave: the sessions themselves are saved (a session made since
    # the last save is lost with the crash too, and with it what was queued for it).
    time.sleep(6)
    total = rate * 8
    started = time.monotonic()
    for i in range(total):
        numbers[pub.publish(f"t/{i % 10}", f"{i:08d}".encode() + bytes(200), qos=1).mid] = i
        if i == total // 2:
            broker.kill()
            time.sleep(1)
            broker.start()
        while i / rate > time.monotonic() - started:
            time.sleep(0.0005)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(received) < total:
        time.sleep(0.5)
    time.sleep(2)
    with lock:
        # paho reuses message ids only after 65,535 more: each id names one message here.
        accepted.update(numbers[mid] for mid in acked_mids)
    lost = sorted(accepted - received)
    print(
        f"autosave {autosave}, {rate} msg/s: published {total}, acknowledged by the broker "
        f"{len(accepted)}, received {len(received)}, acknowledged but lost {len(lost)}"
        + (f" (numbers {lost[0]}..{lost[-1]}, the crash at {total // 2})" if lost else "")
    )
    stop.set()
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "5", int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
