"""``bikesense ingest``: its runtime options reach the embedded runtime's configuration."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bikesense import runtimes
from bikesense.cli import app
from bikesense.runtimes import EmbeddedConfig
from storage.kits import MasterKey


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[EmbeddedConfig]:
    """Settings for ``bikesense ingest``, and the configurations it starts runtimes with
    (the runtime itself is not started: these tests are about the options)."""
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", "postgresql://bikesense@127.0.0.1:9/none")
    monkeypatch.setenv("BIKESENSE_MQTT_URL", "mqtt://127.0.0.1:9")
    monkeypatch.setenv("BIKESENSE_KIT_MASTER_KEY", MasterKey.generate().to_text())
    started: list[EmbeddedConfig] = []

    class Recorded:
        def __init__(self, config: EmbeddedConfig, _master: MasterKey) -> None:
            started.append(config)

    async def no_run(_runtime: Any) -> None:
        return None

    monkeypatch.setattr(runtimes, "EmbeddedRuntime", Recorded)
    monkeypatch.setattr(runtimes, "run_until_signalled", no_run)
    return started


def test_defaults(configured: list[EmbeddedConfig]) -> None:
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    (config,) = configured
    assert (config.writers, config.batch_wait_s, config.max_batch_messages) == (2, 0.5, 1000)


def test_writers_wait_and_batch_size_are_passed_on(configured: list[EmbeddedConfig]) -> None:
    result = CliRunner().invoke(
        app, ["ingest", "--writers", "3", "--batch-wait", "0.2", "--max-batch", "2500"]
    )
    assert result.exit_code == 0, result.output
    (config,) = configured
    assert (config.writers, config.batch_wait_s, config.max_batch_messages) == (3, 0.2, 2500)


@pytest.mark.parametrize("option", ["--writers", "--max-batch"])
def test_a_batch_needs_a_message_and_a_writer(
    configured: list[EmbeddedConfig], option: str
) -> None:
    result = CliRunner().invoke(app, ["ingest", option, "0"])
    assert result.exit_code == 2
    assert "greater than or equal to 1" in " ".join(result.output.replace("│", " ").split())
    assert configured == []


@pytest.mark.parametrize("to", ["database", "kafka"])
def test_retention_reaches_either_runtime(
    configured: list[EmbeddedConfig], monkeypatch: pytest.MonkeyPatch, to: str
) -> None:
    """BIKESENSE_RAW_RETENTION_DAYS is a privacy promise: `ingest --to kafka` runs the same
    maintenance with it as the embedded runtime (it used to run with the defaults)."""
    monkeypatch.setenv("BIKESENSE_RAW_RETENTION_DAYS", "7")
    monkeypatch.setenv("BIKESENSE_KAFKA_URL", "kafka://127.0.0.1:9")

    class RecordedKafka:
        def __init__(self, config: EmbeddedConfig, _master: MasterKey, _producer: Any) -> None:
            configured.append(config)

    monkeypatch.setattr(runtimes, "KafkaIngest", RecordedKafka)
    result = CliRunner().invoke(app, ["ingest", "--to", to, "--writers", "3"])
    assert result.exit_code == 0, result.output
    (config,) = configured
    assert config.maintenance is not None
    assert config.maintenance.raw_retention == timedelta(days=7)
    assert config.writers == 3
