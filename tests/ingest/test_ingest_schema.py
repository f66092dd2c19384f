"""`bikesense ingest` refuses, in one sentence, to start on a database without the
current schema: its writes would fail one by one (or meet tables that lack a column)
while it acknowledged nothing and said only that a retention round failed."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from bikesense.services import free_port
from storage.kits import MasterKey
from storage.migrate import Backend, load_migrations, migrate

pytestmark = pytest.mark.postgres


def _ingest(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BIKESENSE_DATABASE_URL": database_url,
        # No broker there: a check that let ingest through would fail on MQTT instead.
        "BIKESENSE_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "BIKESENSE_KIT_MASTER_KEY": MasterKey.generate().to_text(),
    }
    return subprocess.run(
        [sys.executable, "-m", "bikesense", "ingest", "--log-level", "ERROR"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_empty_database_is_refused_with_what_to_run(database_url: str) -> None:
    result = _ingest(database_url)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    said = " ".join(result.stderr.split())
    assert "no bikesense schema yet" in said
    assert "bikesense db migrate" in said


def test_a_database_behind_this_code_is_refused_naming_what_it_lacks(database_url: str) -> None:
    newest = load_migrations(Backend.PLAIN)[-1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, backend=Backend.PLAIN, target=newest.version - 1)
    result = _ingest(database_url)
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert f"lacks migration {newest.version:04d}_{newest.name}" in said


def test_a_migrated_database_passes_the_check(migrated_database_url: str) -> None:
    result = _ingest(migrated_database_url)
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert "migrate" not in said
    assert "could not connect to MQTT broker" in said
