"""The broker docker-compose.yml ships: what it publishes, and its config run for real.

No container engine here, so deploy/mosquitto.conf runs on the local Mosquitto with its
paths and ports moved to a temporary folder, against the files `kits broker-acl` writes
(what the compose file's broker-accounts service runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; tests are outside mypy's packages
from typer.testing import CliRunner

from bikesense.cli import app
from bikesense.services import free_port, mosquitto_binary, wait_for_port
from ingest.broker_auth import kit_mqtt_password
from storage.kits import MasterKey, register_kit, revoke_kit
from tests.security.conftest import Client

ROOT = Path(__file__).resolve().parents[2]
CONF = (ROOT / "deploy" / "mosquitto.conf").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
INGEST_URL_TEMPLATE = COMPOSE["services"]["ingest-1"]["environment"]["BIKESENSE_MQTT_URL"]


def _ingest_url(password: str = "pw") -> str:
    """Ingest's URL with compose's ``${...}`` interpolation done."""
    return re.sub(r"\$\{[^}]*\}", password, INGEST_URL_TEMPLATE)


def _listeners(conf: str) -> dict[int, dict[str, str]]:
    """Each listener's own settings (per_listener_settings), by port."""
    listeners: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in conf.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            current = listeners.setdefault(int(value.split()[0]), {})
        elif current is not None and key in {
            "allow_anonymous",
            "use_username_as_clientid",
            "password_file",
            "acl_file",
        }:
            current[key] = value
    return listeners


def test_every_listener_refuses_anonymous_clients_and_kits_cannot_pick_a_client_id() -> None:
    assert re.search(r"^per_listener_settings true$", CONF, re.MULTILINE)
    assert not re.search(r"^allow_anonymous true", CONF, re.MULTILINE)
    listeners = _listeners(CONF)
    published = {
        int(p.split(":")[-2] if p.count(":") > 1 else p.split(":")[1])
        for p in COMPOSE["services"]["mosquitto"]["ports"]
    }
    ingest_port = urlsplit(_ingest_url()).port
    assert ingest_port in listeners
    assert ingest_port not in published  # ingest's listener stays on the compose network
    for port, settings in listeners.items():
        assert settings["allow_anonymous"] == "false", port
        assert {"password_file", "acl_file"} <= set(settings), port
    for port in published:  # whatever the world reaches is the kits' listener
        assert listeners[port].get("use_username_as_clientid") == "true", port
    assert listeners[ingest_port]["password_file"] != listeners[min(published)]["password_file"]


@pytest.fixture
def compose_broker(
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[dict[int, int], dict[int, bytes], str]]:
    """deploy/mosquitto.conf running here; returns (its port → ours, kit secrets, ingest pw)."""
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        secrets = {k: register_kit(conn, master, k).secret for k in (21, 22)}
        revoke_kit(conn, 22)
    root = Path(tempfile.mkdtemp(prefix="bikesense-compose-"))
    root.chmod(0o755)
    password = "compose-ingest-pw"
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("BIKESENSE_KIT_MASTER_KEY", master.to_text())
    monkeypatch.setenv("BIKESENSE_MQTT_URL", _ingest_url(password))
    result = CliRunner().invoke(app, ["kits", "broker-acl", "--out", str(root / "auth")])
    assert result.exit_code == 0, result.output
    ports = {port: free_port() for port in _listeners(CONF)}
    conf = CONF.replace("/mosquitto/", f"{root}/")
    for theirs, ours in ports.items():
        conf = conf.replace(f"listener {theirs}\n", f"listener {ours} 127.0.0.1\n")
    conf = conf.replace("log_dest stdout", f"log_dest file {root}/mosquitto.log")
    (root / "data").mkdir()
    (root / "mosquitto.conf").write_text(conf)
    (root / "mosquitto.log").touch()
    if os.geteuid() == 0:  # the broker drops to its own user and must write these
        for path in (root / "data", root / "mosquitto.log"):
            shutil.chown(path, "mosquitto", "mosquitto")
    process = subprocess.Popen(
        [str(mosquitto_binary()), "-c", str(root / "mosquitto.conf")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for ours in ports.values():
            wait_for_port(
                ours,
                timeout_s=15,
                process=process,
                what="Mosquitto",
                log_file=root / "mosquitto.log",
            )
        yield ports, secrets, password
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_the_compose_broker_takes_the_accounts_kits_broker_acl_writes(
    compose_broker: tuple[dict[int, int], dict[int, bytes], str],
) -> None:
    ports, secrets, password = compose_broker
    url = urlsplit(_ingest_url())
    assert url.port is not None
    kit_port = ports[next(p for p in ports if p != url.port)]
    ingest_port = ports[url.port]
    user = unquote(url.username or "")
    attempts = {
        "anonymous on the kits' listener": (kit_port, None, False),
        "anonymous on ingest's listener": (ingest_port, None, False),
        "kit 21 on the kits' listener": (kit_port, ("21", kit_mqtt_password(secrets[21])), True),
        "kit 21 on ingest's listener": (ingest_port, ("21", kit_mqtt_password(secrets[21])), False),
        "revoked kit 22": (kit_port, ("22", kit_mqtt_password(secrets[22])), False),
        "ingest on its listener": (ingest_port, (user, password), True),
        "ingest on the kits' listener": (kit_port, (user, password), False),
    }
    for what, (port, login, expected) in attempts.items():
        client = Client(port, login)
        try:
            assert client.accepted is expected, what
        finally:
            client.close()
