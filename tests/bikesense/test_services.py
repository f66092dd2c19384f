"""The service harness starts real servers on loopback, reports them and stops them."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from typer.testing import CliRunner

from bikesense.cli import app
from bikesense.exceptions import ConfigurationError
from bikesense.services import LocalServices
from bikesense.servicestate import pid_alive
from bikesense.settings import load_settings, resolve_database_url, resolve_kafka_url
from tests.conftest import ROOT


@pytest.mark.postgres
@pytest.mark.mqtt
def test_services_up_status_down(services_root: Path) -> None:
    services = LocalServices(services_root / "state-updown")
    records = services.up()
    try:
        assert set(records) == {"postgres", "mosquitto"}
        hosts = [r.url.split("//")[1].split("@")[-1] for r in records.values()]
        assert all(host.startswith("127.0.0.1:") for host in hosts)
        with psycopg.connect(records["postgres"].url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", records["mosquitto"].port)
        client.disconnect()
        status = services.status()
        assert all(alive for _, alive in status.values())
        # A second `up` reuses what runs instead of starting twice.
        again = services.up()
        assert {n: r.pid for n, r in again.items()} == {n: r.pid for n, r in records.items()}
    finally:
        stopped = services.down()
    assert sorted(stopped) == ["mosquitto", "postgres"]
    assert not any(pid_alive(r.pid) for r in records.values())
    assert services.status() == {}


def test_cli_lists_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "services" in result.output


def test_bad_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", "mysql://nope")
    with pytest.raises(ConfigurationError, match=r"BIKESENSE_DATABASE_URL.*postgresql://"):
        load_settings()


def test_missing_database_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIKESENSE_DATABASE_URL", raising=False)
    settings = load_settings(state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="bikesense services up"):
        resolve_database_url(settings)


def test_configured_url_wins(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, database_url="postgresql://u@db.example:5432/x")
    assert resolve_database_url(settings) == "postgresql://u@db.example:5432/x"


@pytest.mark.kafka
def test_services_up_kafka_status_down(
    services_root: Path, kafka_broker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`services up --kafka`: a KRaft broker on loopback from the cached jars, found by
    `resolve_kafka_url`, reported by `status`, stopped by `down`; a second start of the
    same state folder keeps its data (the cluster is formatted once)."""
    # The jars the harness's own broker was started from: no second download.
    monkeypatch.setenv("BIKESENSE_KAFKA_CACHE_DIR", str(ROOT / ".state" / "kafka-dist"))
    services = LocalServices(services_root / "state-kafka")
    records = services.up(start_postgres=False, start_mosquitto=False, start_kafka=True)
    try:
        assert set(records) == {"kafka"}
        assert records["kafka"].url.startswith("kafka://127.0.0.1:")
        assert services.status()["kafka"][1]
        settings = load_settings(state_dir=services_root / "state-kafka", kafka_url=None)
        assert resolve_kafka_url(settings) == records["kafka"].url
        meta = (services_root / "state-kafka" / "kafka" / "data" / "meta.properties").read_text()
    finally:
        stopped = services.down()
    assert stopped == ["kafka"]
    assert not pid_alive(records["kafka"].pid)
    again = services.up(start_postgres=False, start_mosquitto=False, start_kafka=True)
    try:
        assert pid_alive(again["kafka"].pid)
        assert (
            services_root / "state-kafka" / "kafka" / "data" / "meta.properties"
        ).read_text() == meta
    finally:
        services.down()


def test_kafka_without_java_or_maven_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = CliRunner().invoke(
        app,
        ["services", "up", "--kafka", "--no-postgres", "--no-mosquitto"],
        env={
            "BIKESENSE_STATE_DIR": str(tmp_path / "state"),
            "BIKESENSE_KAFKA_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "Kafka needs Java 17 or newer" in said
    assert "apt-get install openjdk-17-jre-headless" in said
    assert "Traceback" not in result.output
