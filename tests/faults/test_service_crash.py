"""kill -9 of the embedded PostgreSQL and of the embedded Mosquitto, mid-stream.

The services are the ones ``bikesense services up`` starts (a state folder of
their own: durable PostgreSQL, Mosquitto with accounts and persistence), the
fleet logs in as its kits, ``bikesense ingest`` holds the URLs it was given.
After each crash ``services up`` brings the service back; ingest must carry on
by itself, and every reading published must be stored exactly once.

Before bikesense set SO_REUSEADDR when checking a recorded port, a crashed
service's port looked taken (its connections in TIME_WAIT) and ``services up``
moved it to a new port: ingest kept the old URL and stalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from bikesense.brokerauth import ingest_password, kit_mqtt_url, sync_embedded_broker
from bikesense.services import LocalServices, PostgresCluster
from bikesense.servicestate import ServiceRecord
from storage.kits import MasterKey
from storage.migrate import migrate
from tests.faults.fault_support import (
    PER_FRAME,
    KitPublisher,
    assert_exact,
    good_frames,
    register_fleet,
    stored,
)
from tests.runtime_harness import ingest_process, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

KITS = (41, 42, 43)
ROOT = "bikesense/v1"  # the kits' accounts allow the default topic layout only


@dataclass
class Embedded:
    state: Path
    services: LocalServices
    master: MasterKey
    secrets: dict[int, bytes]

    def record(self, name: str) -> ServiceRecord:
        return self.services.records()[name]

    @property
    def database_url(self) -> str:
        return self.record("postgres").url

    @property
    def ingest_url(self) -> str:
        password = quote(ingest_password(self.state), safe="")
        return self.record("mosquitto").url.replace(
            "mqtt://", f"mqtt://bikesense-ingest:{password}@"
        )


@pytest.fixture
def embedded(services_root: Path) -> Iterator[Embedded]:
    state = services_root / f"crash-{uuid.uuid4().hex[:10]}"
    services = LocalServices(state)
    try:
        services.up(start_postgres=True, start_mosquitto=True)
        url = services.records()["postgres"].url
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        master, secrets = register_fleet(url, KITS)
        with psycopg.connect(url, autocommit=True) as conn:
            sync_embedded_broker(state, conn, master)
        yield Embedded(state, services, master, secrets)
    finally:
        services.down()


def _kits(env: Embedded) -> dict[int, KitPublisher]:
    kits_url = env.record("mosquitto").kits_url
    publishers = {
        k: KitPublisher(kit_mqtt_url(kits_url, k, s), str(k)) for k, s in env.secrets.items()
    }
    for publisher in publishers.values():
        wait_for(publisher.client.is_connected, what="the kits to log in")
    return publishers


def _publish(kits: dict[int, KitPublisher], frames: list[tuple[int, bytes]]) -> None:
    for kit, payload in frames:
        kits[kit].publish(f"{ROOT}/kits/{kit}/up", payload)
        time.sleep(0.0005)


def _close(kits: dict[int, KitPublisher]) -> None:
    for publisher in kits.values():
        publisher.close()


def test_postgres_killed_mid_stream_comes_back_on_its_port_and_nothing_is_lost(
    embedded: Embedded,
) -> None:
    env = embedded
    url = env.database_url
    before = env.record("postgres")
    frames = good_frames(env.secrets, 300)  # 900 frames, 9,000 readings
    with ingest_process(
        url, env.ingest_url, env.master, ROOT, "crash-ingest-pg", "--share-group", ""
    ):
        kits = _kits(env)
        try:
            _publish(kits, frames[:300])
            wait_for(lambda: stored(url) > 0, what="the first readings")
            _publish(kits, frames[300:500])  # in flight when the database goes
            PostgresCluster(Path(before.directory), port=before.port).kill()
            _publish(kits, frames[500:700])  # published while it is down
            env.services.up(start_postgres=True, start_mosquitto=True)
            after = env.record("postgres")
            assert (after.port, after.url) == (before.port, before.url)
            assert after.pid != before.pid
            _publish(kits, frames[700:])
            wait_for(
                lambda: _stored_or_zero(url) == len(frames) * PER_FRAME,
                timeout_s=60,
                what=f"every reading after the crash (have {_stored_or_zero(url)})",
            )
        finally:
            _close(kits)
        time.sleep(1)  # a redelivery, if any, would land now
    assert_exact(url, len(frames) * PER_FRAME)


def test_mosquitto_killed_mid_stream_comes_back_on_its_ports_and_nothing_saved_is_lost(
    embedded: Embedded,
) -> None:
    """What the broker had saved (autosave) survives its crash; see docs/deployment.md for
    what it had not saved yet. Ingest is paused while the broker holds a backlog for it,
    the backlog is saved, then the broker is killed with messages in flight to ingest."""
    env = embedded
    url = env.database_url
    before = env.record("mosquitto")
    saved = Path(before.directory) / "persistence" / "mosquitto.db"
    frames = good_frames(env.secrets, 300)
    with ingest_process(
        url, env.ingest_url, env.master, ROOT, "crash-ingest-mqtt", "--share-group", ""
    ) as ingest:
        kits = _kits(env)
        try:
            _publish(kits, frames[:300])
            wait_for(lambda: stored(url) == 300 * PER_FRAME, what="the first readings")
            ingest.send_signal(signal.SIGSTOP)
            try:
                _publish(kits, frames[300:600])
                wait_for(
                    lambda: all(k.acked == k.sent for k in kits.values()),
                    what="the broker to accept the backlog",
                )
                accepted_at = time.time()
                wait_for(
                    lambda: saved.exists() and saved.stat().st_mtime > accepted_at + 0.01,
                    timeout_s=20,
                    what="the broker to save its backlog",
                )
                os.kill(before.pid, signal.SIGKILL)
                wait_for(lambda: not _alive(before.pid), what="the broker to die")
                env.services.up(start_postgres=True, start_mosquitto=True)
            finally:
                ingest.send_signal(signal.SIGCONT)
            after = env.record("mosquitto")
            assert (after.url, after.kits_url) == (before.url, before.kits_url)
            for publisher in kits.values():
                wait_for(publisher.client.is_connected, what="the kits to log in again")
            _publish(kits, frames[600:])
            wait_for(
                lambda: stored(url) == len(frames) * PER_FRAME,
                timeout_s=60,
                what=f"every reading after the crash (have {stored(url)})",
            )
        finally:
            _close(kits)
        time.sleep(1)
    assert_exact(url, len(frames) * PER_FRAME)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stored_or_zero(url: str) -> int:
    try:
        return stored(url)
    except psycopg.OperationalError:
        return 0


def test_services_up_watch_starts_crashed_services_again_on_their_ports(
    embedded: Embedded,
) -> None:
    """The supervisor of ``bikesense services up --watch``: nobody runs ``up`` by hand."""
    env = embedded
    before = {name: env.record(name) for name in ("postgres", "mosquitto")}
    stop = threading.Event()
    restarted: list[str] = []
    watcher = threading.Thread(
        target=env.services.watch,
        args=(stop,),
        kwargs={"interval_s": 0.5, "restarted": lambda r: restarted.append(r.name)},
    )
    watcher.start()
    try:
        for record in before.values():
            os.kill(record.pid, signal.SIGKILL)
        wait_for(
            lambda: sorted(restarted) == ["mosquitto", "postgres"],
            timeout_s=60,
            what=f"both services started again (so far {restarted})",
        )
    finally:
        stop.set()
        watcher.join(30)
    for name, old in before.items():
        new = env.record(name)
        assert (new.url, new.kits_url, new.port) == (old.url, old.kits_url, old.port)
        assert new.pid != old.pid
    assert _stored_or_zero(env.database_url) == 0  # the same database answers on the old URL
    kits = _kits(env)  # and the broker takes the kits' logins on the old port
    _close(kits)


def test_the_watch_command_restarts_a_killed_postgres_and_stops_on_sigterm(
    services_root: Path,
) -> None:
    """``bikesense services up --watch`` itself, as an operator runs it."""
    state = services_root / f"watch-{uuid.uuid4().hex[:10]}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BIKESENSE_DATABASE_URL", "BIKESENSE_MQTT_URL")
    }
    env["BIKESENSE_STATE_DIR"] = str(state)
    with tempfile.TemporaryFile() as out:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "bikesense", "services", "up", "--no-mosquitto", "--watch"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def said(text: str) -> bool:
            out.seek(0)
            return text in out.read().decode(errors="replace")

        try:
            wait_for(
                lambda: said("watching") or watcher.poll() is not None,
                timeout_s=120,
                what="services up to start",
            )
            assert watcher.poll() is None, "services up --watch exited"
            before = LocalServices(state).records()["postgres"]
            os.kill(before.pid, signal.SIGKILL)
            wait_for(
                lambda: said("postgres had stopped: started again on"),
                timeout_s=60,
                what="the watcher to start PostgreSQL again",
            )
            after = LocalServices(state).records()["postgres"]
            assert (after.url, after.pid != before.pid) == (before.url, True)
            watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(30) == 0
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(10)
            LocalServices(state).down()
