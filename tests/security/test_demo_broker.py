"""`bikesense demo` with nothing configured: the fleet logs in kit by kit, everything it
publishes is stored, and the broker it leaves running turns the attacks away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from bikesense.services import LocalServices, free_port
from ingest.broker_auth import kit_mqtt_password
from storage.kits import MasterKey, active_kit_secrets
from tests.security.conftest import Client

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]


@pytest.fixture
def demo_state(services_root: Path, unique_topic_prefix: str) -> Iterator[Path]:
    state = services_root / f"demo-{unique_topic_prefix}"
    try:
        yield state
    finally:
        LocalServices(state).down()


def test_the_demo_runs_on_an_authenticated_broker(demo_state: Path) -> None:
    configured = {
        "BIKESENSE_DATABASE_URL",
        "BIKESENSE_MQTT_URL",
        "BIKESENSE_KIT_MASTER_KEY",
        "BIKESENSE_KIT_MASTER_KEY_FILE",
    }  # nothing configured: the embedded default
    env = {k: v for k, v in os.environ.items() if k not in configured}
    env["BIKESENSE_STATE_DIR"] = str(demo_state)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bikesense",
            "demo",
            "--bikes",
            "3",
            "--minutes",
            "10",
            "--speed",
            "600",
            "--port",
            str(free_port()),
            "--exit-when-done",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 0, said + result.stderr
    assert "readings published in this run stored" in said
    assert "only" not in said

    record = json.loads((demo_state / "services.json").read_text())
    ingest_port = urlsplit(record["mosquitto"]["url"]).port
    kits_port = urlsplit(record["mosquitto"]["kits_url"]).port
    assert ingest_port is not None
    assert kits_port is not None
    for port in (ingest_port, kits_port):
        snoop = Client(port, None)
        try:
            assert not snoop.accepted
        finally:
            snoop.close()
    master = MasterKey.from_text((demo_state / "kit-master.key").read_text())
    with psycopg.connect(record["postgres"]["url"]) as conn:
        secrets = active_kit_secrets(conn, master)
    kit, victim = sorted(secrets)[:2]
    login = (str(kit), kit_mqtt_password(secrets[kit]))
    assert not Client(ingest_port, login).accepted
    ingest = Client(
        ingest_port, ("bikesense-ingest", (demo_state / "mqtt-ingest.password").read_text().strip())
    )
    try:
        assert ingest.accepted
        ingest.subscribe(f"bikesense/v1/kits/{victim}/status")
        time.sleep(0.5)
        ingest.messages.clear()  # the victim's own retained status
        thief = Client(kits_port, login, client_id="bikesense-demo-ingest", persistent=True)
        try:
            thief.publish(f"bikesense/v1/kits/{victim}/status", b'{"battery_pct": 1}', retain=True)
        finally:
            thief.close()
        time.sleep(0.7)
        assert ingest.messages == []
        assert ingest.disconnects == 0
    finally:
        ingest.close()
