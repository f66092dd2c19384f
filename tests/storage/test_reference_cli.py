"""``bikesense reference import | list`` against the real server: a report of what was
stored, and every failure one line on stderr with nothing imported."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bikesense.cli import app

pytestmark = pytest.mark.postgres

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


@pytest.fixture
def runner(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))
    # A narrow terminal: a long error must still be one line.
    monkeypatch.setenv("COLUMNS", "40")
    return CliRunner()


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM reference_stations),"
            " (SELECT count(*) FROM reference_values)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_import_both_formats_then_again_then_list(
    runner: CliRunner, migrated_database_url: str
) -> None:
    result = runner.invoke(app, ["reference", "import", str(EXAMPLES / "reference.csv")])
    assert result.exit_code == 0, result.output
    assert "csv, 2 station(s), 6 hour(s): 6 new, 0 updated, 0 unchanged" in result.stdout
    result = runner.invoke(
        app, ["reference", "import", str(EXAMPLES / "reference-luchtmeetnet.json")]
    )
    assert result.exit_code == 0, result.output
    assert "luchtmeetnet, 2 station(s), 6 hour(s): 0 new, 0 updated, 6 unchanged" in (
        result.stdout.replace("\n", " ")
    )
    assert "left out (no bikesense metric): O3 1" in result.stdout.replace("\n", " ")
    assert counts(migrated_database_url) == (2, 6)

    result = runner.invoke(app, ["reference", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("NL99901", "NL99902", "pm25", "no2", "pm10", "2024-03-05"):
        assert text in result.stdout


def test_the_format_can_be_forced_and_the_hour_label_chosen(
    runner: CliRunner, migrated_database_url: str, tmp_path: Path
) -> None:
    source = EXAMPLES / "reference-luchtmeetnet.json"
    result = runner.invoke(app, ["reference", "import", str(source), "--format", "csv"])
    assert result.exit_code == 1
    assert "line 1: unknown column" in one_error_line(result.stderr)
    result = runner.invoke(app, ["reference", "import", str(source), "--hour-label", "start"])
    assert result.exit_code == 0, result.output
    with psycopg.connect(migrated_database_url) as conn:
        first = conn.execute("SELECT min(hour_start) FROM reference_values").fetchone()
    assert first is not None
    assert first[0].isoformat() == "2024-03-05T09:00:00+00:00"


def test_a_bad_line_imports_nothing_of_the_file(
    runner: CliRunner, migrated_database_url: str, tmp_path: Path
) -> None:
    lines = (EXAMPLES / "reference.csv").read_text().splitlines()
    lines.insert(4, lines[2].replace(",28.9,", ",28,9,"))  # a decimal comma: 9 fields
    bad = tmp_path / ("a-rather-long-file-name-for-a-narrow-terminal-" * 3 + ".csv")
    bad.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["reference", "import", str(bad)])
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert line.endswith("line 5: 9 fields, but the header names 8 columns; nothing was imported")
    assert counts(migrated_database_url) == (0, 0)


def test_a_missing_file_and_an_unmigrated_database_are_one_line(
    runner: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["reference", "import", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "No such file" in one_error_line(result.stderr)

    monkeypatch.setenv("BIKESENSE_DATABASE_URL", database_url)  # an empty database
    result = runner.invoke(app, ["reference", "import", str(EXAMPLES / "reference.csv")])
    assert result.exit_code == 1
    assert "bikesense db migrate" in one_error_line(result.stderr)
    result = runner.invoke(app, ["reference", "list"])
    assert result.exit_code == 1
    assert "reference_stations" in one_error_line(result.stderr)
