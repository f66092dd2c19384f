"""The service harness starts real servers on loopback, reports them and stops them."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from typer.testing import CliRunner

from bikesense.cli import app
from bikesense.exceptions import ConfigurationError
from bikesense.services import LocalServices, pid_alive
from bikesense.settings import load_settings, resolve_database_url


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
