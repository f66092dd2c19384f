"""MQTT 3.1.1 against MQTT 5 for the ingest subscriber, measured side by side in one run.

Publishes N QoS 1 messages of a typical frame size to a throwaway Mosquitto,
and times a paho subscriber with manual acks (as ingest runs it) receiving
them, once per protocol version. Prints a table and writes
bench/results/mqtt_protocol.json.

    .venv/bin/python bench/bench_mqtt_protocol.py [--messages 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bikesense.services import MosquittoBroker

PAYLOAD = bytes(range(256)) * 2  # about one frame of 10 readings plus envelope


def publish(port: int, topic: str, count: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, PAYLOAD, qos=1) for _ in range(count)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def subscribe_rate(port: int, protocol: int, topic: str, count: int) -> float:
    done = threading.Event()
    got = 0

    def on_message(client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        nonlocal got
        client.ack(message.mid, message.qos)
        got += 1
        if got == count:
            done.set()

    name = f"bench-{protocol}"
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol, manual_ack=True
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=name,
            protocol=protocol,
            clean_session=False,
            manual_ack=True,
        )
    client.on_message = on_message
    if protocol == mqtt.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=True, properties=props)
    else:
        client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    time.sleep(0.5)
    # Publish while disconnected from the clock: queue everything first, then time delivery.
    client.disconnect()
    client.loop_stop()
    publish(port, topic, count)
    start = time.perf_counter()
    if protocol == mqtt.MQTTv5:
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.reconnect()
    client.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return got / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bikesense-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        broker = MosquittoBroker(root / "mosquitto")
        broker.start()
        try:
            results = {}
            for name, protocol in (("v3.1.1", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
                results[name] = subscribe_rate(
                    broker.port, protocol, f"bench/{name}", args.messages
                )
        finally:
            broker.stop()
    figures = {
        "benchmark": "mqtt_protocol",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "messages": args.messages,
        "payload_bytes": len(PAYLOAD),
        "v311_msgs_per_s": round(results["v3.1.1"]),
        "v5_msgs_per_s": round(results["v5"]),
        "v311_over_v5": round(results["v3.1.1"] / results["v5"], 2),
    }
    print(f"{'protocol':<10}{'msgs/s':>12}")
    for name, rate in results.items():
        print(f"{name:<10}{rate:>12,.0f}")
    print(f"v3.1.1 / v5 = {figures['v311_over_v5']}")
    out = Path(__file__).parent / "results" / "mqtt_protocol.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
