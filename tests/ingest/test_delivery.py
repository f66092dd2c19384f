"""No loss, no double counting: real `bikesense ingest` processes, real Mosquitto and PostgreSQL.

These start the ingest command as a child process, the way an operator runs it,
and kill it, restart it, run two of it, or take the database away under it.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import psycopg
import pytest

from bikesense.services import PostgresCluster
from firmware_protocol import empty_readings, encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.partials import Metric
from stream.core.policy import EXCLUDING_FLAGS
from tests.runtime_harness import ingest_process, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

KITS = (11, 12, 13)
PER_FRAME = 10


def _frames(
    secrets: dict[int, bytes], frames_per_kit: int, boot: int = 1
) -> list[tuple[int, bytes]]:
    # Readings one second apart, ending a minute ago: none in the future.
    start_ms = int(time.time() * 1000) - (frames_per_kit * PER_FRAME + 60) * 1000
    out = []
    for seq in range(frames_per_kit):
        for kit in KITS:
            r = empty_readings(PER_FRAME)
            r["ts_ms"] = start_ms + seq * PER_FRAME * 1000 + np.arange(PER_FRAME) * 1000
            r["lat_deg"] = 52.12 + kit * 1e-3 + np.arange(PER_FRAME) * 1e-5
            r["lon_deg"] = 4.65
            r["gnss_fix"] = 2
            r["hdop"] = 1.0
            r["speed_mps"] = 4.0
            r["pm25_ugm3"] = 10.0 + (np.arange(PER_FRAME) + seq) % 7 * 0.3  # not a stuck sensor
            r["interval_ms"] = 1000
            out.append((kit, encode_readings(kit, boot, seq, r, secrets[kit])))
    return out


@pytest.fixture
def fleet(migrated_database_url: str) -> tuple[MasterKey, dict[int, bytes]]:
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in KITS}
    return master, secrets


def _publish(mqtt_url: str, root: str, frames: list[tuple[int, bytes]]) -> None:
    publisher = MqttPublisher(mqtt_url, topic_root=root, max_inflight=500)
    publisher.connect()
    for kit, payload in frames:
        publisher.publish(f"{root}/kits/{kit}/up", payload)
    publisher.close()


def _count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM readings"))


def _assert_exact(url: str, expected_readings: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        readings, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (kit_id, boot_id, seq, idx)) FROM readings"
        ).fetchone()
        n_partials = conn.execute(
            "SELECT sum(n) FROM window_partials WHERE metric = %s AND resolution = 10"
            " AND window_s = 60",
            (int(Metric.PM25),),
        ).fetchone()[0]
        publishable = conn.execute(
            "SELECT count(*) FROM readings WHERE qa_flags & %s = 0 AND pm25_ugm3 IS NOT NULL",
            (int(EXCLUDING_FLAGS[Metric.PM25]),),
        ).fetchone()[0]
    assert (readings, distinct) == (expected_readings, expected_readings)
    # Aggregates counted each publishable reading exactly once, whatever was redelivered.
    assert publishable > expected_readings // 2
    assert n_partials == publishable


def test_kill_minus_nine_mid_stream_loses_nothing(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    master, secrets = fleet
    root = f"{unique_topic_prefix}/bikesense/v1"
    client_id = f"{unique_topic_prefix}-ingest"
    frames = _frames(secrets, 400)  # 1,200 frames, 12,000 readings
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id) as first:
        _publish(mqtt_url, root, frames[:600])
        wait_for(lambda: _count(migrated_database_url) > 0, what="the first readings")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    _publish(mqtt_url, root, frames[600:])  # ingest is down: the broker keeps its session queue
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id):
        wait_for(
            lambda: _count(migrated_database_url) == len(frames) * PER_FRAME,
            timeout_s=60,
            what=f"every reading after the restart (have {_count(migrated_database_url)})",
        )
        time.sleep(1)
    _assert_exact(migrated_database_url, len(frames) * PER_FRAME)


def test_burst_beyond_mosquittos_default_queue_arrives_whole(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    """Mosquitto drops QoS 1 beyond max_queued_messages (default 1000); ours is configured."""
    master, secrets = fleet
    root = f"{unique_topic_prefix}/bikesense/v1"
    client_id = f"{unique_topic_prefix}-ingest"
    frames = _frames(secrets, 1000)  # 3,000 messages queued for an offline subscriber
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id):
        pass  # the broker now keeps a persistent session for this client id
    _publish(mqtt_url, root, frames)
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id):
        wait_for(
            lambda: _count(migrated_database_url) == len(frames) * PER_FRAME,
            timeout_s=90,
            what="the whole burst",
        )
    _assert_exact(migrated_database_url, len(frames) * PER_FRAME)


def test_two_ingest_processes_share_the_load_without_double_counting(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    master, secrets = fleet
    root = f"{unique_topic_prefix}/bikesense/v1"
    frames = _frames(secrets, 300)
    with (
        ingest_process(migrated_database_url, mqtt_url, master, root, f"{root}-a"),
        ingest_process(migrated_database_url, mqtt_url, master, root, f"{root}-b"),
    ):
        _publish(mqtt_url, root, frames)
        wait_for(
            lambda: _count(migrated_database_url) == len(frames) * PER_FRAME,
            timeout_s=60,
            what="every reading through two processes",
        )
        time.sleep(1)
        with psycopg.connect(migrated_database_url, autocommit=True) as conn:
            by_app = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bikesense-stream'"
            ).fetchone()[0]
    assert by_app >= 2  # both processes were writing
    _assert_exact(migrated_database_url, len(frames) * PER_FRAME)


def test_database_away_and_back_loses_nothing(
    pg_cluster: PostgresCluster | None,
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    if pg_cluster is None:
        pytest.skip("needs the harness's own PostgreSQL to stop and start it")
    master, secrets = fleet
    root = f"{unique_topic_prefix}/bikesense/v1"
    client_id = f"{unique_topic_prefix}-ingest"
    frames = _frames(secrets, 200)
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id) as process:
        _publish(mqtt_url, root, frames[:300])
        wait_for(lambda: _count(migrated_database_url) == 300 * PER_FRAME, what="first half")
        pg_cluster.stop(mode="immediate")
        try:
            _publish(mqtt_url, root, frames[300:])  # the broker takes them; ingest cannot write
            time.sleep(3)
            assert process.poll() is None, "ingest must wait for the database, not exit"
        finally:
            pg_cluster.start()
        wait_for(
            lambda: _count(migrated_database_url) == len(frames) * PER_FRAME,
            timeout_s=60,
            what="the second half after the database came back",
        )
    _assert_exact(migrated_database_url, len(frames) * PER_FRAME)


def test_sigterm_while_the_database_is_away_stops_without_losing_anything(
    pg_cluster: PostgresCluster | None,
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
    fleet: tuple[MasterKey, dict[int, bytes]],
) -> None:
    if pg_cluster is None:
        pytest.skip("needs the harness's own PostgreSQL to stop and start it")
    master, secrets = fleet
    root = f"{unique_topic_prefix}/bikesense/v1"
    client_id = f"{unique_topic_prefix}-ingest"
    frames = _frames(secrets, 100)
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id) as process:
        pg_cluster.stop(mode="immediate")
        try:
            _publish(mqtt_url, root, frames)
            time.sleep(2)  # ingest holds a batch it cannot write
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0, "ingest must stop promptly, database or not"
        finally:
            pg_cluster.start()
    with ingest_process(migrated_database_url, mqtt_url, master, root, client_id):
        wait_for(
            lambda: _count(migrated_database_url) == len(frames) * PER_FRAME,
            timeout_s=60,
            what="every reading from the broker after the restart",
        )
    _assert_exact(migrated_database_url, len(frames) * PER_FRAME)
