"""``bikesense db`` commands against the real server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bikesense.cli import app as bikesense_app
from storage.cli import app

pytestmark = pytest.mark.postgres


def test_migrate_status_kits(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", database_url)
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("BIKESENSE_KIT_MASTER_KEY", raising=False)
    monkeypatch.delenv("BIKESENSE_KIT_MASTER_KEY_FILE", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "not migrated yet" in result.output
    result = runner.invoke(app, ["migrate", "--backend", "plain"])
    assert result.exit_code == 0, result.output
    assert "applied 0001, 0002" in result.output
    result = runner.invoke(app, ["migrate"])
    assert "nothing (up to date)" in result.output
    assert "pending" not in runner.invoke(app, ["status"]).output

    # The kit registry lives under `bikesense kits` (ingest/cli.py).
    result = runner.invoke(bikesense_app, ["kits", "add", "17", "--pseudonym", "kit-blue"])
    assert result.exit_code == 0, result.output
    secret = bytes.fromhex(result.output.split("secret: ")[1].split()[0])
    assert len(secret) == 32
    assert (tmp_path / "kit-master.key").exists()
    assert runner.invoke(bikesense_app, ["kits", "add", "17"]).exit_code == 1
    assert "kit-blue" in runner.invoke(bikesense_app, ["kits", "list"]).output
    assert "revoked" in runner.invoke(bikesense_app, ["kits", "revoke", "17"]).output
    assert runner.invoke(bikesense_app, ["kits", "revoke", "18"]).exit_code == 1
    result = runner.invoke(app, ["ensure-partitions", "--days-ahead", "1"])
    assert "created 2 partition(s)" in result.output
    result = runner.invoke(app, ["drop-expired", "--keep-days", "30"])
    assert result.exit_code == 0, result.output
    assert "dropped 0" in result.output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM kits").fetchone() == (1,)
