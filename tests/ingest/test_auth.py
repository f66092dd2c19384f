"""Kit authentication end to end: revoked kits, status messages, and the broker's own ACL."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from bikesense.cli import app
from bikesense.runtimes import EmbeddedConfig
from bikesense.services import MosquittoBroker
from firmware_protocol import StatusMessage, empty_readings, encode_readings, encode_status
from ingest.broker_auth import kit_mqtt_password
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, get_kit, register_kit, revoke_kit
from tests.runtime_harness import running, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]


def _frame(kit: int, seq: int, secret: bytes) -> bytes:
    r = empty_readings(3)
    r["ts_ms"] = int(time.time() * 1000) - 10_000 + np.arange(3) * 1000
    r["lat_deg"] = 52.13
    r["lon_deg"] = 4.66
    r["gnss_fix"] = 2
    r["pm25_ugm3"] = 9.0
    r["interval_ms"] = 1000
    return encode_readings(kit, 1, seq, r, secret)


def test_revoked_kit_is_refused_and_status_is_recorded(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        good = register_kit(conn, master, 1).secret
        gone = register_kit(conn, master, 2).secret
        revoke_kit(conn, 2)
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=migrated_database_url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
    )
    status = StatusMessage(
        battery_pct=81.5,
        battery_v=3.9,
        firmware_version="1.4.2",
        uptime_s=600,
        queue_depth=0,
        ts_ms=int(time.time() * 1000),
        kit_id=1,
    )
    with running(config, master):
        with MqttPublisher(mqtt_url, topic_root=root) as publisher:
            publisher.publish(f"{root}/kits/1/up", _frame(1, 1, good))
            publisher.publish(f"{root}/kits/2/up", _frame(2, 1, gone))
            publisher.publish(f"{root}/kits/1/status", encode_status(status), retain=True)
            publisher.publish(f"{root}/kits/1/status", b"{not json")
        wait_for(
            lambda: scalar(migrated_database_url, "SELECT count(*) FROM rejected_frames") == 2,
            what="two rejects",
        )
        wait_for(
            lambda: (
                scalar(migrated_database_url, "SELECT battery_pct FROM kits WHERE kit_id = 1")
                is not None
            ),
            what="the status of kit 1",
        )
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM rejected_frames"))
        assert reasons == ["bad_status", "revoked_kit"]
        assert conn.execute("SELECT DISTINCT kit_id FROM readings").fetchall() == [(1,)]
        kit = get_kit(conn, 1)
    assert kit is not None
    assert kit.battery_pct == pytest.approx(81.5)
    assert kit.firmware_version == "1.4.2"
    assert kit.last_seen_at is not None


class Listener:
    """A subscriber that records what reaches it."""

    def __init__(self, port: int, user: str, password: str, topic: str) -> None:
        self.got: list[str] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listen-{user}")
        self.client.username_pw_set(user, password)
        self.client.on_message = lambda _c, _u, m: self.got.append(m.topic)
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


def _connect_code(port: int, user: str | None, password: str | None) -> int:
    result: list[int] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(int(getattr(reason, "value", 0)))
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    client._reset_sockets()
    return result[0]


@pytest.fixture
def acl_broker(
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[MosquittoBroker, dict[int, bytes]]]:
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in (7, 8, 9)}
        revoke_kit(conn, 9)
    root = Path(tempfile.mkdtemp(prefix="bikesense-acl-"))
    root.chmod(0o755)
    out = root / "broker"
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("BIKESENSE_KIT_MASTER_KEY", master.to_text())
    result = CliRunner().invoke(
        app,
        [
            "kits",
            "broker-acl",
            "--out",
            str(out),
            "--ingest-password",
            "ingest-pw",
            "--topic-root",
            "acl/v1",
        ],
    )
    assert result.exit_code == 0, result.output
    broker = MosquittoBroker(out, password_file=out / "passwords", acl_file=out / "acl")
    broker.start()
    try:
        yield broker, secrets
    finally:
        broker.stop()
        shutil.rmtree(root)  # it holds the kits' password hashes and the ACL


def test_broker_acl_lets_each_kit_publish_only_to_its_own_topics(
    acl_broker: tuple[MosquittoBroker, dict[int, bytes]],
) -> None:
    broker, secrets = acl_broker
    assert _connect_code(broker.port, None, None) != 0  # anonymous refused
    assert _connect_code(broker.port, "7", "wrong") != 0
    assert _connect_code(broker.port, "9", kit_mqtt_password(secrets[9])) != 0  # revoked
    listener = Listener(broker.port, "bikesense-ingest", "ingest-pw", "acl/v1/kits/+/up")
    try:
        kit = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kit-7")
        kit.username_pw_set("7", kit_mqtt_password(secrets[7]))
        kit.connect("127.0.0.1", broker.port)
        kit.loop_start()
        own = kit.publish("acl/v1/kits/7/up", b"mine", qos=1)
        other = kit.publish("acl/v1/kits/8/up", b"forged", qos=1)
        own.wait_for_publish(10)
        other.wait_for_publish(10)
        wait_for(lambda: "acl/v1/kits/7/up" in listener.got, timeout_s=10, what="kit 7's own frame")
        time.sleep(0.5)
        kit.disconnect()
        kit.loop_stop()
        kit._reset_sockets()
    finally:
        listener.close()
    assert listener.got == ["acl/v1/kits/7/up"]  # the frame on kit 8's topic never got through
