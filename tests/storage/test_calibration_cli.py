"""``bikesense calibration fit | apply | list`` and ``reference kind`` against the real server:
a report of what was done, and every failure one line on stderr."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bikesense.cli import app
from tests.storage.calibration_data import STATION_ID, write_all
from tests.storage.test_reference_cli import one_error_line

pytestmark = pytest.mark.postgres


@pytest.fixture
def runner(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("BIKESENSE_H3_RESOLUTIONS", "[7,8,9,10]")
    monkeypatch.setenv("COLUMNS", "40")
    return CliRunner()


def test_fit_list_apply_and_errors(runner: CliRunner, migrated_database_url: str) -> None:
    nothing = runner.invoke(app, ["calibration", "fit"])
    assert nothing.exit_code == 1
    assert "no readings stored" in one_error_line(nothing.stderr)
    assert runner.invoke(app, ["calibration", "list"]).stdout.startswith("no corrections yet")

    write_all(migrated_database_url)
    kind = runner.invoke(app, ["reference", "kind", STATION_ID, "background"])
    assert kind.exit_code == 0, kind.stderr
    bad_kind = runner.invoke(app, ["reference", "kind", STATION_ID, "kerbside"])
    assert bad_kind.exit_code == 1
    assert "station kind must be" in one_error_line(bad_kind.stderr)
    unknown = runner.invoke(app, ["reference", "kind", "NL00000", "traffic"])
    assert "no reference station 'NL00000'" in one_error_line(unknown.stderr)

    backwards = runner.invoke(
        app, ["calibration", "fit", "--from", "2026-11-23", "--to", "2026-11-21"]
    )
    assert backwards.exit_code == 1
    assert "must be after --from" in one_error_line(backwards.stderr)

    fit = runner.invoke(app, ["calibration", "fit", "--step-days", "1", "--window-days", "1"])
    assert fit.exit_code == 0, fit.stderr
    assert "2 period(s)" in fit.stdout
    assert "2 day(s) re-computed" in fit.stdout
    again = runner.invoke(app, ["calibration", "fit", "--step-days", "1", "--window-days", "1"])
    assert "0 new" in again.stdout
    assert "0 day(s) re-computed" in again.stdout
    listed = runner.invoke(app, ["calibration", "list", "--metric", "pm25"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0
    assert listed.stdout.count(" kit ") >= 6  # 3 kits × 2 days, source kit
    forced = runner.invoke(app, ["calibration", "apply", "--force"])
    assert "2 day(s) re-computed" in forced.stdout
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute("SELECT kind FROM reference_stations").fetchone()
    assert row == ("background",)
