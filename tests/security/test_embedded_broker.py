"""The broker `bikesense services up` starts follows the kit registry, without a restart."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from bikesense.brokerauth import INGEST_PASSWORD_FILE, INGEST_USER, ingest_mqtt_url
from bikesense.cli import app
from bikesense.services import LocalServices, MosquittoBroker
from bikesense.servicestate import ServiceRecord, pid_alive
from bikesense.settings import load_settings
from storage.kits import MasterKey
from tests.security.conftest import Client, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
def local_broker(
    services_root: Path,
    unique_topic_prefix: str,
) -> Iterator[tuple[Path, ServiceRecord]]:
    state = services_root / f"state-{unique_topic_prefix}"
    services = LocalServices(state)
    records = services.up(start_postgres=False)
    try:
        yield state, records["mosquitto"]
    finally:
        services.down()


def _kits(state: Path, database_url: str, master: MasterKey, *args: str) -> str:
    result = CliRunner().invoke(
        app,
        ["kits", *args],
        env={
            "BIKESENSE_STATE_DIR": str(state),
            "BIKESENSE_DATABASE_URL": database_url,
            "BIKESENSE_KIT_MASTER_KEY": master.to_text(),
        },
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_services_up_starts_a_broker_that_refuses_anonymous_clients(
    local_broker: tuple[Path, ServiceRecord],
) -> None:
    state, record = local_broker
    assert record.kits_url
    assert record.kits_url != record.url
    for url in (record.url, record.kits_url):
        assert urlsplit(url).hostname == "127.0.0.1"
        snoop = Client(_port(url), None)
        try:
            assert snoop.connack not in (None, 0), f"anonymous login accepted at {url}"
        finally:
            snoop.close()
    # Ingest's own account: generated, readable by its owner only, and good on its listener.
    password_file = state / INGEST_PASSWORD_FILE
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    url = ingest_mqtt_url(load_settings(state_dir=state, mqtt_url=None))
    parts = urlsplit(url)
    assert (parts.username, parts.port) == (INGEST_USER, _port(record.url))
    assert parts.password
    ingest = Client(_port(record.url), (INGEST_USER, parts.password))
    try:
        assert ingest.accepted
    finally:
        ingest.close()


def test_kits_add_and_revoke_reach_the_running_broker(
    local_broker: tuple[Path, ServiceRecord],
    migrated_database_url: str,
) -> None:
    state, record = local_broker
    master = MasterKey.generate()
    added = _kits(state, migrated_database_url, master, "add", "4242")
    password = next(
        line.split(": ", 1)[1] for line in added.splitlines() if line.startswith("mqtt password:")
    )
    kit = Client(_port(record.kits_url), ("4242", password))
    assert kit.accepted
    _kits(state, migrated_database_url, master, "revoke", "4242")
    try:
        wait_for(lambda: kit.disconnects > 0, what="the revoked kit's disconnection")
        again = Client(_port(record.kits_url), ("4242", password))
        try:
            assert not again.accepted
        finally:
            again.close()
    finally:
        kit.close()
    assert LocalServices(state).records()["mosquitto"].pid == record.pid  # never restarted


def test_a_kit_added_while_the_broker_is_down_logs_in_once_it_is_up(
    services_root: Path,
    unique_topic_prefix: str,
    migrated_database_url: str,
) -> None:
    state = services_root / f"state-down-{unique_topic_prefix}"
    services = LocalServices(state)
    services.up(start_postgres=False)
    services.down()
    master = MasterKey.generate()
    added = _kits(state, migrated_database_url, master, "add", "4343")
    password = next(
        line.split(": ", 1)[1] for line in added.splitlines() if line.startswith("mqtt password:")
    )
    record = services.up(start_postgres=False)["mosquitto"]
    try:
        kit = Client(_port(record.kits_url), ("4343", password))
        try:
            assert kit.accepted
        finally:
            kit.close()
    finally:
        services.down()


def test_an_anonymous_broker_left_by_an_older_bikesense_is_replaced(
    services_root: Path,
    unique_topic_prefix: str,
) -> None:
    state = services_root / f"state-old-{unique_topic_prefix}"
    services = LocalServices(state)
    old = MosquittoBroker(state / "mosquitto", daemon=True).start()
    services._save({"mosquitto": old})
    try:
        record = services.up(start_postgres=False)["mosquitto"]
        assert not pid_alive(old.pid)
        assert record.kits_url
        snoop = Client(_port(record.kits_url), None)
        try:
            assert not snoop.accepted
        finally:
            snoop.close()
    finally:
        services.down()
        if pid_alive(old.pid):
            os.kill(old.pid, signal.SIGKILL)
