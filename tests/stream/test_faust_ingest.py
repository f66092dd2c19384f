"""``ingest --to kafka``: MQTT → admission → Kafka, acked only after Kafka took the readings.

Real Mosquitto and PostgreSQL, with a recording stand-in for the producer behind
the aiokafka one's interface where a test needs Kafka to refuse or to show what
it was given; the readings it recorded are handed to the faust agents' test
contexts. The aiokafka producer against the harness's real broker is the
``kafka`` test at the end; the whole path through real worker processes is in
``tests/stream/test_distributed_kafka.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from bikesense.exceptions import ConfigurationError
from bikesense.runtimes import EmbeddedConfig, KafkaIngest
from firmware_protocol import StatusMessage, empty_readings, encode_status
from firmware_protocol import encode_readings as encode_frame
from firmware_protocol.readings import READING_DTYPE
from ingest.admission import Admitted
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.privacy import CircleZone, PrivacyConfig, in_zones
from stream.core.process import CoreConfig
from stream.faust_app.app import StreamApp
from stream.faust_app.codec import decode_readings, kit_key
from stream.faust_app.exceptions import KafkaError
from stream.faust_app.ingest import (
    AiokafkaReadingsProducer,
    bootstrap_servers,
    readings_messages,
)
from stream.faust_app.steps import StoreOutcome
from tests.runtime_harness import running_runtime as running
from tests.runtime_harness import scalar, wait_for
from tests.stream.test_faust_support import app_factory, feed, record_sends

CENTRE = (52.1290, 4.6560)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., StreamApp]]:
    with app_factory(tmp_path) as make:
        yield make


def _readings(kit_id: int, start_ms: int, n: int) -> np.ndarray:
    r = empty_readings(n)
    r["kit_id"] = kit_id
    r["ts_ms"] = start_ms + np.arange(n) * 5000
    r["lat_deg"] = CENTRE[0] + np.arange(n) * 1e-5
    r["lon_deg"] = CENTRE[1]
    r["gnss_fix"] = 2
    r["hdop"] = 0.9
    r["satellites"] = 9
    r["speed_mps"] = 4.0
    r["pm1_ugm3"], r["pm25_ugm3"], r["pm10_ugm3"] = 4.0, 8.0, 12.0
    r["noise_laeq_db"], r["noise_lamax_db"] = 60.0, 66.0
    r["interval_ms"] = 5000
    r["temperature_c"], r["humidity_pct"] = 12.0, 60.0
    return r


# --- pure pieces ---------------------------------------------------------------------------


def test_readings_messages_hold_one_kit_each_in_order_and_chunked() -> None:
    a, b = _readings(1, 1_000_000, 10), _readings(2, 2_000_000, 3)
    readings = np.concatenate([a[:4], b, a[4:]])
    received = np.arange(len(readings), dtype=np.int64) + 500
    admitted = Admitted(readings, received)
    messages = readings_messages(admitted, max_readings=4)
    assert [k for k, _ in messages] == [b"1", b"1", b"1", b"2"]
    decoded = [decode_readings(v) for _, v in messages]
    assert [len(r) for r, _ in decoded] == [4, 4, 2, 3]
    kit1 = np.concatenate([r for r, _ in decoded[:3]])
    assert kit1.tobytes() == a.tobytes()  # a kit's readings keep their order
    np.testing.assert_array_equal(
        np.concatenate([t for _, t in decoded[:3]]), np.r_[received[:4], received[7:]]
    )
    assert readings_messages(Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))) == []


def test_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://kafka:9092") == ["kafka:9092"]
    assert bootstrap_servers("kafka://a:9092;kafka://b:9093") == ["a:9092", "b:9093"]
    assert bootstrap_servers("kafka://a,b:9093") == ["a:9092", "b:9093"]
    with pytest.raises(ConfigurationError, match="no Kafka broker"):
        bootstrap_servers("kafka://")


# --- KafkaIngest with real Mosquitto and PostgreSQL ------------------------------------------


class RecordingProducer:
    """Kafka stand-in: keeps what it is given; can refuse the first ``failures`` batches."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.sent: list[tuple[bytes, bytes]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def send_all(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise KafkaError("Kafka is away (test)")
        self.sent.extend(messages)

    async def stop(self) -> None:
        self.stopped = True

    def readings(self) -> int:
        return sum(len(decode_readings(v)[0]) for _, v in self.sent)


@pytest.fixture
def fleet(migrated_database_url: str) -> tuple[MasterKey, dict[int, bytes]]:
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        secrets = {kit: register_kit(conn, master, kit).secret for kit in (10, 11)}
    return master, secrets


def _config(mqtt_url: str, database_url: str, prefix: str, client: str = "a") -> EmbeddedConfig:
    return EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=database_url,
        client_id=f"{prefix}-{client}",
        topic_root=f"{prefix}/bikesense/v1",
        retry_min_s=0.05,
        retry_max_s=0.2,
    )


def _publish(mqtt_url: str, root: str, messages: list[tuple[str, bytes]]) -> None:
    publisher = MqttPublisher(mqtt_url, topic_root=root)
    publisher.connect()
    for topic, payload in messages:
        publisher.publish(f"{root}/{topic}", payload)
    publisher.close()


@pytest.mark.postgres
@pytest.mark.mqtt
def test_ingest_to_kafka_then_agents_store_everything_once(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master, secrets = fleet
    url = migrated_database_url
    config = _config(mqtt_url, url, unique_topic_prefix)
    now_ms = int(time.time() * 1000) - 3_600_000
    frames = {
        (10, 1): _readings(10, now_ms, 6),
        (10, 2): _readings(10, now_ms + 30_000, 6),
        (11, 1): _readings(11, now_ms, 4),
    }
    published = [
        (f"kits/{kit}/up", encode_frame(kit, 1, seq, r, secrets[kit]))
        for (kit, seq), r in frames.items()
    ]
    published.append(("kits/10/up", encode_frame(10, 1, 3, _readings(10, now_ms, 2), b"\x01" * 32)))
    status = StatusMessage(
        battery_pct=81.0,
        battery_v=3.9,
        firmware_version="1.4.2",
        uptime_s=60,
        queue_depth=0,
        ts_ms=now_ms,
        kit_id=11,
        boot_id=1,
    )
    published.append(("kits/11/status", encode_status(status)))
    producer = RecordingProducer()

    with running(KafkaIngest(config, master, producer)):
        _publish(mqtt_url, config.topic_root, published)
        wait_for(lambda: producer.readings() == 16, what="16 readings produced")
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM rejected_frames") == 1,
            what="the forged frame rejected",
        )
        wait_for(
            lambda: scalar(url, "SELECT battery_pct FROM kits WHERE kit_id = 11") == 81.0,
            what="kit 11's status",
        )
    assert producer.started
    assert producer.stopped
    for key, value in producer.sent:
        readings, _ = decode_readings(value)
        assert {kit_key(k) for k in readings["kit_id"].tolist()} == {key}
    assert scalar(url, "SELECT reason FROM rejected_frames") == "bad_mac"
    assert scalar(url, "SELECT count(*) FROM readings") == 0  # the workers store readings

    # What Kafka would deliver, through the two agents: every reading stored once, even
    # when a message of the readings topic is delivered twice.
    stream_app = make_app(url)
    sent = record_sends(stream_app.enriched, monkeypatch)

    async def scenario() -> list[StoreOutcome]:
        async with stream_app.qa.test_context() as qa:
            for i, (key, value) in enumerate([*producer.sent, producer.sent[0]]):
                await qa.put(value, key=key, timestamp=now_ms / 1000 + i)
        async with stream_app.store.test_context() as store:
            return await feed(
                store,
                sent.messages,
                first_ts_s=now_ms / 1000,
                done=lambda r: sum(o.messages for o in r) == len(sent.messages),
            )

    outcomes = asyncio.run(scenario())
    assert sum(o.inserted for o in outcomes) == 16
    assert sum(o.duplicates for o in outcomes) == len(decode_readings(producer.sent[0][1])[0])
    assert scalar(url, "SELECT count(*) FROM readings") == 16
    assert scalar(url, "SELECT count(*) FROM kits WHERE last_seen_at IS NOT NULL") == 2


@pytest.mark.postgres
@pytest.mark.mqtt
def test_ingest_retries_while_kafka_refuses(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    master, secrets = fleet
    config = _config(mqtt_url, migrated_database_url, unique_topic_prefix)
    frame = encode_frame(10, 1, 1, _readings(10, int(time.time() * 1000) - 60_000, 5), secrets[10])
    producer = RecordingProducer(failures=3)
    with running(KafkaIngest(config, master, producer)):
        _publish(mqtt_url, config.topic_root, [("kits/10/up", frame)])
        wait_for(lambda: producer.readings() == 5, what="the frame produced after 3 refusals")
    assert producer.attempts == 4
    assert "Kafka unavailable" in caplog.text


@pytest.mark.postgres
@pytest.mark.mqtt
def test_nothing_is_acked_until_kafka_took_it(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    """Kafka refuses until ingest stops: the broker then gives the frame to the next ingest."""
    master, secrets = fleet
    config = _config(mqtt_url, migrated_database_url, unique_topic_prefix)
    frame = encode_frame(11, 1, 1, _readings(11, int(time.time() * 1000) - 60_000, 3), secrets[11])
    refusing = RecordingProducer(failures=10**6)
    with running(KafkaIngest(config, master, refusing)):
        _publish(mqtt_url, config.topic_root, [("kits/11/up", frame)])
        wait_for(lambda: refusing.attempts >= 2, what="produce attempts")
    assert refusing.sent == []
    # Same client id: the persistent session still holds the unacknowledged frame.
    accepting = RecordingProducer()
    with running(KafkaIngest(config, master, accepting)):
        wait_for(lambda: accepting.readings() == 3, what="the frame delivered again")


# --- against a real Kafka broker (BIKESENSE_TEST_KAFKA_URL) --------------------------------


@pytest.mark.kafka
def test_producer_round_trip_through_a_real_broker(kafka_url: str) -> None:
    """The aiokafka producer's messages come back from the broker as written (keys, bytes)."""
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]  # noqa: PLC0415

    topic = f"bikesense-test-{uuid.uuid4().hex[:10]}"
    admitted = Admitted(
        np.concatenate([_readings(1, 1_000_000, 5), _readings(2, 1_000_000, 3)]),
        np.full(8, 1_000_500, dtype=np.int64),
    )
    messages = readings_messages(admitted)

    async def scenario() -> list[tuple[bytes, bytes]]:
        producer = AiokafkaReadingsProducer(kafka_url, topic, client_id="bikesense-test")
        await producer.start()
        try:
            await producer.send_all(messages)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers(kafka_url),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: list[Any] = []
            while len(got) < len(messages):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                got.extend(record for records in batch.values() for record in records)
        finally:
            await consumer.stop()
        return [(r.key, r.value) for r in got]

    assert sorted(asyncio.run(scenario())) == sorted(messages)


@pytest.mark.postgres
@pytest.mark.mqtt
def test_kafka_ingest_keeps_privacy_zones_out_of_kafka_and_the_rejects(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    master, secrets = fleet
    url = migrated_database_url
    depot = CircleZone("depot", CENTRE[0], CENTRE[1], 50.0)
    config = dataclasses.replace(
        _config(mqtt_url, url, unique_topic_prefix),
        core=CoreConfig(privacy=PrivacyConfig(zones=(depot,))),
    )
    now_ms = int(time.time() * 1000) - 3_600_000
    riding = _readings(10, now_ms, 8)
    riding["lat_deg"] = CENTRE[0] + np.arange(8) * 2e-4  # 22 m apart: the first three in the zone
    published = [
        ("kits/10/up", encode_frame(10, 1, 1, riding, secrets[10])),
        ("kits/11/up", encode_frame(11, 1, 1, _readings(11, now_ms, 2), b"\x02" * 32)),
    ]
    producer = RecordingProducer()
    with running(KafkaIngest(config, master, producer)):
        _publish(mqtt_url, config.topic_root, published)
        wait_for(lambda: producer.readings() == 5, what="the five readings outside the depot")
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM rejected_frames") == 1,
            what="the forged frame rejected",
        )
    sent = np.concatenate([decode_readings(v)[0] for _, v in producer.sent])
    assert not in_zones(sent["lat_deg"], sent["lon_deg"], (depot,)).any()
    # The forged frame was in the depot: its reject keeps the reason, not the bytes.
    assert scalar(url, "SELECT length(payload) FROM rejected_frames") == 0
