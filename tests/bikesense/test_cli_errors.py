"""Every CLI failure is one line and an exit code, never a traceback: one root error.

Before every package's error tree derived from ``BikesenseError``, ``bikesense
ingest`` against an unreachable broker died with a 19-frame traceback (ingest's
``BrokerError`` was not a ``BikesenseError``, the only thing the command catches).
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bikesense.exceptions import BikesenseError
from bikesense.services import free_port
from storage.kits import MasterKey

#: Every module that draws an error tree (``grep -rn 'class .*Error'``).
ERROR_MODULES = (
    "bikesense.exceptions",
    "firmware_protocol.exceptions",
    "stream.core.exceptions",
    "storage.exceptions",
    "ingest.exceptions",
    "ingest.handover",
    "stream.faust_app.exceptions",
    "simulators.exceptions",
    "api.errors",
    "api.export_stream",
)


@pytest.mark.parametrize("module", ERROR_MODULES)
def test_every_package_error_derives_from_the_one_root(module: str) -> None:
    errors = [
        cls
        for _, cls in inspect.getmembers(importlib.import_module(module), inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == module
    ]
    assert errors, f"{module} defines no error"
    assert [e.__name__ for e in errors if not issubclass(e, BikesenseError)] == []


def test_ingest_against_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BIKESENSE_STATE_DIR": str(tmp_path),
        "BIKESENSE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        "BIKESENSE_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "BIKESENSE_KIT_MASTER_KEY": MasterKey.generate().to_text(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "bikesense", "ingest", "--log-level", "ERROR"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]]
    assert "could not connect to MQTT broker 127.0.0.1:" in errors[0]


def test_an_error_a_command_lets_through_is_translated_at_the_edge(tmp_path: Path) -> None:
    """The edge itself: a BikesenseError no command caught still ends as one line."""
    code = (
        "import typer, bikesense.cli as c\n"
        "from ingest.exceptions import TopicError\n"
        "@c.app.command('boom')\n"
        "def boom() -> None:\n"
        "    raise TopicError('topic x is not a kit topic')\n"
        "c.app()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "boom"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "BIKESENSE_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: topic x is not a kit topic"


def test_a_long_error_with_brackets_is_one_line_as_written(tmp_path: Path) -> None:
    """rich wrapped errors at the terminal's width and took "[...]" for markup."""
    code = (
        "import bikesense.cli as c\n"
        "from storage.exceptions import MigrationError\n"
        "@c.app.command('boom')\n"
        "def boom() -> None:\n"
        "    raise MigrationError('the database has migrations this code does not know: "
        "[106, 107]; ' + 'x' * 120)\n"
        "c.app()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "boom"],
        env={**os.environ, "COLUMNS": "40", "BIKESENSE_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "does not know: [106, 107]; " + "x" * 120 in lines[0]
