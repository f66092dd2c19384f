"""`bikesense simulate` on the broker `bikesense services up` starts, which refuses anonymous
clients: the fleet's kits are registered, each logs in as itself on the kits' listener,
every publication reaches ingest's listener, and `bikesense ingest` stores every reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bikesense.services import LocalServices
from simulators.framefile import read_frame_file
from simulators.truth import TruthRecord
from tests.security.conftest import Client, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

#: Nothing configured: the services of the state folder, as the README's steps have it.
CONFIGURED = (
    "BIKESENSE_DATABASE_URL",
    "BIKESENSE_MQTT_URL",
    "BIKESENSE_KIT_MASTER_KEY",
    "BIKESENSE_KIT_MASTER_KEY_FILE",
)


@pytest.fixture(scope="module")
def services_state(services_root: Path) -> Iterator[Path]:
    state = services_root / f"simulate-{uuid.uuid4().hex[:10]}"
    services = LocalServices(state)
    try:
        services.up(start_postgres=True, start_mosquitto=True, start_kafka=False)
        migrated = _bikesense(state, "db", "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield state
    finally:
        services.down()


def _bikesense(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    env["BIKESENSE_STATE_DIR"] = str(state)
    return subprocess.run(
        [sys.executable, "-m", "bikesense", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_simulate_publishes_as_each_kit_on_the_services_up_broker(
    services_state: Path, tmp_path: Path
) -> None:
    record = LocalServices(services_state).records()["mosquitto"]
    password = (services_state / "mqtt-ingest.password").read_text().strip()
    port = int(record.url.rpartition(":")[2])
    ingest = Client(port, ("bikesense-ingest", password))
    out = tmp_path / "run.frames"
    try:
        assert ingest.accepted
        ingest.subscribe("bikesense/v1/kits/+/up", "bikesense/v1/kits/+/status")
        result = _bikesense(
            services_state,
            "simulate",
            "--bikes",
            "3",
            "--minutes",
            "5",
            "--seed",
            "2",
            "--out",
            str(out),
            "--mqtt",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        sent = sorted((p.topic("bikesense/v1"), p.payload) for p in read_frame_file(out))
        assert len(sent) > 3
        wait_for(lambda: len(ingest.messages) >= len(sent), what="the fleet's publications")
        time.sleep(0.3)  # anything extra would show up now
    finally:
        ingest.close()
    assert sorted(ingest.messages) == sent
    said = " ".join(result.stderr.split())
    assert "kits registered: 3 new" in said
    assert "as each kit" in said

    # The same fleet again: registered already, and as welcome.
    again = _bikesense(services_state, "simulate", "--bikes", "3", "--minutes", "5", "--seed", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 already" in " ".join(again.stderr.split())


def test_one_anonymous_connection_is_refused_in_one_sentence(services_state: Path) -> None:
    result = _bikesense(
        services_state, "simulate", "--bikes", "2", "--minutes", "2", "--connect", "shared"
    )
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert "refused an anonymous client" in said
    assert "--connect per-kit" in said
    assert said.count("error:") == 1


def test_register_only_then_publish_without_registering(services_state: Path) -> None:
    """The steps for a broker that `services up` did not start: register, then publish."""
    first = _bikesense(
        services_state, "simulate", "--bikes", "2", "--seed", "5", "--no-mqtt", "--register"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    said = " ".join(first.stderr.split())
    assert "kits registered: 2 new" in said
    assert "published" not in said
    then = _bikesense(
        services_state, "simulate", "--bikes", "2", "--seed", "5", "--minutes", "2", "--no-register"
    )
    assert then.returncode == 0, then.stdout + then.stderr
    assert "registered" not in then.stderr

    stranger = _bikesense(
        services_state,
        "simulate",
        "--bikes",
        "1",
        "--seed",
        "99",
        "--minutes",
        "2",
        "--no-register",
    )
    assert stranger.returncode == 1
    said = " ".join(stranger.stderr.split())
    assert "Traceback" not in stranger.stderr
    assert "refused kit" in said
    assert "--register" in said


def test_what_simulate_publishes_is_stored_through_ingest(
    services_state: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    env["BIKESENSE_STATE_DIR"] = str(services_state)
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        ingest = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bikesense",
                "ingest",
                "--client-id",
                "sim-test-ingest",
                "--share-group",
                "",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "consuming" in log_path.read_text() or ingest.poll() is not None,
            timeout_s=30,
            what="ingest's subscription",
        )
        truth, keys = tmp_path / "truth.npz", tmp_path / "kits.json"
        result = _bikesense(
            services_state,
            "simulate",
            "--bikes",
            "2",
            "--minutes",
            "10",
            "--seed",
            "12",
            "--truth-out",
            str(truth),
            "--keys-out",
            str(keys),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        expected = len(TruthRecord.load(truth).deliverable())
        assert expected > 0
        kit_ids = [k["kit_id"] for k in json.loads(keys.read_text())]
        database_url = LocalServices(services_state).records()["postgres"].url

        def stored() -> int:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM readings WHERE kit_id = ANY(%s)", (kit_ids,)
                ).fetchone()
            return int(row[0]) if row else 0

        try:
            wait_for(lambda: stored() >= expected, timeout_s=60, what=f"{expected} readings stored")
        except AssertionError as missing:
            raise AssertionError(
                f"{missing}: {stored()} stored; simulate said {result.stderr!r}; "
                f"ingest said {log_path.read_text()!r}"
            ) from None
        time.sleep(0.5)
        assert stored() == expected
        assert ingest.poll() is None, log_path.read_text()
    finally:
        ingest.terminate()
        ingest.wait(20)
