"""docker-compose.yml and the Dockerfile stay consistent with the code.

There is no container engine here (docs/design.md decision 5), so the deployment is
checked by reading it: every command a bikesense service runs must be a
``bikesense`` command, every ``BIKESENSE_*`` variable one that bikesense reads,
every file it mounts must exist, and the numbers it shares with the code (MQTT
queue limits, Kafka partitions) must agree with the code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; tests are outside mypy's packages
from typer.testing import CliRunner

from bikesense.cli import app as bikesense_app
from bikesense.kafka.broker import kafka_version
from bikesense.services import MQTT_MAX_QUEUED_BYTES, MQTT_MAX_QUEUED_MESSAGES
from bikesense.settings import variables
from ingest.limits import MAX_PACKET_BYTES
from storage.kits import MasterKey
from stream.faust_app.app import DistributedConfig

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: The services that run the bikesense image (the others are Mosquitto, Kafka, TimescaleDB).
BIKESENSE = {name: s for name, s in SERVICES.items() if s.get("image") == "bikesense:latest"}

_DEFAULT = re.compile(r"^\$\{[A-Z_]+:-(?P<default>[^}]+)\}$")


def _local_path(text: str) -> Path:
    """A path of the compose file, with ``${VAR:-default}`` taken at its default."""
    match = _DEFAULT.match(text)
    return ROOT / (match["default"] if match else text)


def test_the_bikesense_services_are_all_there() -> None:
    assert set(BIKESENSE) == {"migrate", "broker-accounts", "ingest-1", "ingest-2", "stream", "api"}
    assert {"mosquitto", "kafka", "timescaledb"} <= set(SERVICES)
    assert "zookeeper" not in SERVICES
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft


@pytest.mark.parametrize("name", sorted(BIKESENSE))
def test_every_command_is_a_bikesense_command(name: str) -> None:
    command = BIKESENSE[name]["command"]
    result = CliRunner().invoke(bikesense_app, [*command, "--help"])
    assert result.exit_code == 0, (
        f"service {name!r} runs `bikesense {' '.join(command)}`, which the CLI does not "
        f"accept:\n{result.output}"
    )


@pytest.mark.parametrize("name", sorted(BIKESENSE))
def test_every_variable_is_one_bikesense_reads(name: str) -> None:
    known = set(variables())
    names = set(BIKESENSE[name].get("environment", {}))
    assert names - known == set(), f"service {name!r} sets variables nothing reads"
    assert {"BIKESENSE_DATABASE_URL", "BIKESENSE_KIT_MASTER_KEY_FILE"} <= names


def test_the_kit_master_key_is_a_secret_file_that_parses() -> None:
    secret = COMPOSE["secrets"]["kit_master_key"]
    key = MasterKey.from_text(_local_path(secret["file"]).read_text())
    assert key.key_id
    mounted = BIKESENSE["stream"]["environment"]["BIKESENSE_KIT_MASTER_KEY_FILE"]
    assert mounted == "/run/secrets/kit_master_key"
    assert all("kit_master_key" in s.get("secrets", []) for s in BIKESENSE.values())


def test_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert _local_path(source).is_file(), f"{name} mounts missing {source}"


def test_mosquitto_has_the_deliberate_queue_limits() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "deploy/mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert int(conf["max_queued_messages"]) == MQTT_MAX_QUEUED_MESSAGES
    assert int(conf["max_queued_bytes"]) == MQTT_MAX_QUEUED_BYTES
    assert conf["persistence"] == "true"
    # The same packet limit as the embedded broker: nothing larger than the largest frame.
    assert int(conf["max_packet_size"]) == MAX_PACKET_BYTES


def test_kafka_and_the_workers_agree_on_partitions() -> None:
    broker = int(SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    command = BIKESENSE["stream"]["command"]
    worker = int(command[command.index("--partitions") + 1])
    assert broker == worker == DistributedConfig().partitions


def test_the_compose_broker_is_the_kafka_the_tests_run_against() -> None:
    image = SERVICES["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}"
    # Topics come from bikesense with their partition count, never from a first produce.
    assert SERVICES["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_ingest_processes_have_distinct_stable_client_ids() -> None:
    ids = []
    for name, service in BIKESENSE.items():
        command = service["command"]
        if command[0] == "ingest":
            assert command[command.index("--to") + 1] == "kafka", name
            ids.append(command[command.index("--client-id") + 1])
    assert len(ids) == len(set(ids)) == 2


def test_the_dockerfile_copies_what_exists_and_runs_bikesense() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["bikesense"]' in text
    assert os.path.basename(COMPOSE["x-bikesense"]["build"]) == "."
