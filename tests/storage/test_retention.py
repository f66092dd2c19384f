"""The raw-retention setting reaches both backends: plain partitions and TimescaleDB's
policies and chunks follow ``BIKESENSE_RAW_RETENTION_DAYS`` (docs/privacy.md, "What is
kept, and for how long"), and so do calibration's pairs (a kit near a station in an
hour); what is kept whatever it says (the aggregates, raw and corrected, day presence
and the stations' hours) stays on both, with no retention policy on TimescaleDB."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from storage.cli import app
from storage.migrate import Backend, recorded_backend
from storage.retention import RAW_HORIZON_TABLES, apply_retention, retention_policies
from storage.writer import MS_PER_DAY, write_batch
from stream.core.aggregate import aggregate
from stream.maintenance import MaintenanceConfig, run_maintenance
from tests.storage.storage_factories import make_readings

pytestmark = pytest.mark.postgres

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(60, 86400), day_tz="UTC"
)
#: Days before now of the three rides (and refused frames) each test stores.
AGES_DAYS = (40, 20, 1)


@pytest.fixture(params=[Backend.PLAIN, Backend.TIMESCALE], ids=str)
def database(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend (TimescaleDB's skips where there is none)."""
    fixture = "plain_database_url" if request.param is Backend.PLAIN else "timescale_database_url"
    return str(request.getfixturevalue(fixture))


def seed(conn: psycopg.Connection[Any]) -> datetime:
    """A ride and a refused frame at each of ``AGES_DAYS``, and what calibration stores of
    them; returns the server's now."""
    conn.execute(
        "INSERT INTO reference_stations (station_id, name, lat_deg, lon_deg)"
        " VALUES ('NL1', 'Utrecht', 52.1, 5.1)"
    )
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    now: datetime = row[0]
    now_ms = int(now.timestamp() * 1000)
    for kit, age in enumerate(AGES_DAYS, start=1):
        t0_ms = now_ms - age * MS_PER_DAY
        write_batch(
            conn, make_readings(30, kit_id=kit, ride_id=kit, t0_ms=t0_ms, seed=kit), AGGREGATE
        )
        conn.execute(
            "INSERT INTO rejected_frames (received_at, reason, payload)"
            " VALUES (to_timestamp(%s / 1000.0), 'bad_mac', '\\x00')",
            (t0_ms,),
        )
        # What calibration keeps of the ride's hour: the station's value, the kit's
        # co-location with it, and the corrected aggregates beside the raw ones (here the
        # raw PM2.5 partials, with an uncertainty sum).
        hour = "date_trunc('hour', to_timestamp(%(t)s / 1000.0))"
        conn.execute(
            "INSERT INTO reference_values (station_id, metric, hour_start, value_ugm3, valid,"
            f" source) VALUES ('NL1', 'pm25', {hour}, 10, true, 'csv')",
            {"t": t0_ms},
        )
        conn.execute(
            "INSERT INTO calibration_pairs (kit_id, station_id, metric, hour_start, kit_mean,"
            " n, humid_term_mean, distance_mean_m, n_zero, reference_ugm3)"
            f" VALUES (%(kit)s, 'NL1', 'pm25', {hour}, 11, 30, 0, 20, 0, 10)",
            {"t": t0_ms, "kit": kit},
        )
    conn.execute(
        "INSERT INTO cell_windows_corrected (resolution, window_s, window_start, cell, pm25_n,"
        " pm25_sum, pm25_sumsq, pm25_min, pm25_max, pm25_hist_offset, pm25_hist, pm25_u_sum)"
        " SELECT resolution, window_s, window_start, cell, pm25_n, pm25_sum, pm25_sumsq,"
        " pm25_min, pm25_max, pm25_hist_offset, pm25_hist, 0.5 * pm25_n FROM cell_windows"
        " WHERE pm25_n > 0"
    )
    return now


def kits_stored(conn: psycopg.Connection[Any]) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT DISTINCT kit_id FROM readings").fetchall()}


def rejects(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM rejected_frames").fetchone()
    assert row is not None
    return int(row[0])


def aggregates(conn: psycopg.Connection[Any]) -> list[Any]:
    """What is kept whatever the raw retention: the aggregates, raw and corrected, day
    presence, and the stations' hours (docs/storage.md, "What is kept")."""
    return [
        conn.execute(query).fetchone()
        for query in (
            "SELECT count(*), sum(pm25_n) FROM cell_windows",
            "SELECT count(*), sum(pm25_n), sum(pm25_u_sum) FROM cell_windows_corrected",
            "SELECT count(*) FROM window_presence WHERE window_s = 86400",
            "SELECT count(*) FROM reference_values",
        )
    ]


def kits_paired(conn: psycopg.Connection[Any]) -> set[int]:
    """The kits of the calibration pairs left: they go with the raw readings."""
    rows = conn.execute("SELECT DISTINCT kit_id FROM calibration_pairs").fetchall()
    return {int(r[0]) for r in rows}


def expected_policies(conn: psycopg.Connection[Any], days: int) -> dict[str, timedelta]:
    if recorded_backend(conn) is Backend.PLAIN:
        return {}  # nothing to set: drop_expired is the policy
    return dict.fromkeys(RAW_HORIZON_TABLES, timedelta(days=days))


def test_the_maintenance_round_follows_the_configured_retention(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        now = seed(conn)
        kept = aggregates(conn)
        report = run_maintenance(conn, MaintenanceConfig(raw_retention=timedelta(days=30)), now=now)
        assert len(report.dropped) == 1
        assert kits_stored(conn) == {2, 3}
        assert rejects(conn) == 2
        assert (report.pairs_deleted, kits_paired(conn)) == (1, {2, 3})
        assert retention_policies(conn) == expected_policies(conn, 30)
        # A shorter setting at the next round: the policy and the data follow it.
        run_maintenance(conn, MaintenanceConfig(raw_retention=timedelta(days=10)), now=now)
        assert kits_stored(conn) == {3}
        assert rejects(conn) == 1
        assert kits_paired(conn) == {3}
        assert retention_policies(conn) == expected_policies(conn, 10)
        assert aggregates(conn) == kept  # aggregates are never expired
        assert kept[1][0] > 0
        assert kept[3] == (3,)


def test_the_cli_takes_the_retention_from_the_environment(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", database)
    runner = CliRunner()
    with psycopg.connect(database, autocommit=True) as conn:
        seed(conn)
        kept = aggregates(conn)
        monkeypatch.setenv("BIKESENSE_RAW_RETENTION_DAYS", "7")
        result = runner.invoke(app, ["migrate"])
        assert result.exit_code == 0, result.output
        assert retention_policies(conn) == expected_policies(conn, 7)
        assert kits_stored(conn) == kits_paired(conn) == {1, 2, 3}  # migrate drops nothing
        monkeypatch.setenv("BIKESENSE_RAW_RETENTION_DAYS", "30")
        result = runner.invoke(app, ["drop-expired"])
        assert result.exit_code == 0, result.output
        assert "dropped 1 partition(s)" in result.output
        assert "and 1 calibration pair(s)" in result.output
        assert kits_stored(conn) == kits_paired(conn) == {2, 3}
        assert rejects(conn) == 2
        assert retention_policies(conn) == expected_policies(conn, 30)
        # --keep-days wins over the environment, for a one-off clean-up.
        result = runner.invoke(app, ["drop-expired", "--keep-days", "10"])
        assert result.exit_code == 0, result.output
        assert kits_stored(conn) == kits_paired(conn) == {3}
        assert retention_policies(conn) == expected_policies(conn, 10)
        assert aggregates(conn) == kept


def test_a_policy_already_right_is_left_alone(timescale_database_url: str) -> None:
    with psycopg.connect(timescale_database_url, autocommit=True) as conn:
        jobs = (
            "SELECT job_id, scheduled FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' ORDER BY job_id"
        )
        before = conn.execute(jobs).fetchall()
        assert apply_retention(conn, timedelta(days=90)) == []  # the migration's default
        assert apply_retention(conn, timedelta(days=14)) == list(RAW_HORIZON_TABLES)
        assert apply_retention(conn, timedelta(days=14)) == []
        assert conn.execute(jobs).fetchall() == before  # altered in place: same jobs, schedule
    with pytest.raises(ValueError, match="positive"):
        apply_retention(conn, timedelta(0))
