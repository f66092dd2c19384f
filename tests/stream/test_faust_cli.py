"""``bikesense stream worker``: refuses to start without what it needs, saying what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bikesense.exceptions import ConfigurationError
from bikesense.runtimes import EmbeddedConfig, run_kafka_ingest
from bikesense.settings import load_settings
from stream.cli import app
from stream.faust_app.app import DistributedConfig, create_app


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BIKESENSE_KAFKA_URL", "BIKESENSE_DATABASE_URL", "BIKESENSE_MQTT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))  # no services recorded here


@pytest.mark.usefixtures("clean_environment")
def test_worker_needs_kafka() -> None:
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "BIKESENSE_KAFKA_URL=kafka://host:9092" in result.output


@pytest.mark.usefixtures("clean_environment")
def test_worker_needs_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIKESENSE_KAFKA_URL", "kafka://127.0.0.1:9")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2  # configuration: nothing ran
    assert "no database: set BIKESENSE_DATABASE_URL" in " ".join(result.output.split())


@pytest.mark.usefixtures("clean_environment")
def test_worker_says_in_one_line_that_kafka_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BIKESENSE_KAFKA_URL", "kafka://127.0.0.1:9")
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", "postgresql://x@127.0.0.1:9/x")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert output.startswith("error: cannot reach Kafka at 127.0.0.1:9")
    assert "Traceback" not in result.output


def test_worker_help_lists_its_options() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    for option in ("--store", "--partitions", "--replicas", "--log-level"):
        assert option in result.output


def test_app_factory_refuses_without_kafka_or_with_a_bad_routing(tmp_path: Path) -> None:
    settings = load_settings(database_url="postgresql://x@127.0.0.1:9/x", state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="BIKESENSE_KAFKA_URL"):
        create_app(settings)
    with pytest.raises(ConfigurationError, match="routing resolution 11 must be between 0 and"):
        create_app(
            settings,
            broker_url="kafka://127.0.0.1:9",
            config=DistributedConfig(routing_resolution=11),
        )
    trimming = load_settings(
        database_url="postgresql://x@127.0.0.1:9/x", state_dir=tmp_path, trim_end_s=120.0
    )
    with pytest.raises(ConfigurationError, match=r"TRIM_END_S.*embedded runtime"):
        create_app(trimming, broker_url="kafka://127.0.0.1:9")


def test_kafka_ingest_needs_kafka(tmp_path: Path) -> None:
    config = EmbeddedConfig(
        mqtt_url="mqtt://127.0.0.1:9",
        database_url="postgresql://x@h/x",
        client_id="x",
        share_group="g",
        topic_root="r",
    )
    with pytest.raises(ConfigurationError, match="set BIKESENSE_KAFKA_URL=kafka://host:9092"):
        run_kafka_ingest(load_settings(state_dir=tmp_path), config)
