"""Calibration stored: pairs and corrections in the database, corrected aggregates beside raw.

A fleet of three kits with known PM2.5 gain and offset (tests/storage/calibration_data.py)
goes through the stream's aggregation and the batch writer into real PostgreSQL; the
reference station's hours are imported as a CSV. Every expectation is computed here
from the readings and the stored corrections, not taken from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import psycopg
import pytest

from storage.calibration_run import run_fit
from storage.cell_stats import cell_stats
from storage.corrected_apply import apply_range
from storage.corrections import list_corrections
from storage.reference import store_reference
from storage.reference_formats import parse_reference
from storage.selection import BBox, Selection
from storage.time_series import time_series
from stream.core.calibration_fit import FitConfig
from stream.core.partials import Metric
from tests.api.api_factories import RESOLUTIONS, WINDOWS
from tests.storage.calibration_data import (
    DAY0,
    DAYS,
    KITS,
    PLACE,
    PLACE_CELL,
    place_truth,
    reference_csv,
    write_all,
)

pytestmark = pytest.mark.postgres

RANGE = (DAY0, DAYS[-1] + timedelta(days=1))
BOX = BBox(PLACE[1] - 0.003, PLACE[0] - 0.002, PLACE[1] + 0.003, PLACE[0] + 0.002)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    write_all(migrated_database_url)
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def _fit(conn: psycopg.Connection[Any], step_days: int = 1) -> Any:
    return run_fit(
        conn,
        *RANGE,
        resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        step_days=step_days,
        # A day's corrections from that day's co-locations only.
        fit=FitConfig(window_days=1),
        metrics=("pm25_ugm3",),
    )


def _table(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def _sel(day: int, *, corrected: bool, hour: int = 10) -> Selection:
    start = datetime(DAYS[day].year, DAYS[day].month, DAYS[day].day, hour, tzinfo=UTC)
    return Selection(
        metric=Metric.PM25,
        resolution=10,
        window_s=3600,
        start=start,
        end=start + timedelta(hours=1),
        corrected=corrected,
    )


def _independent_mean(conn: psycopg.Connection[Any], day: int, hour: int) -> float:
    """The corrected mean at PLACE computed here: the hour's readings in the cell, each
    corrected by (raw − offset) / gain with its kit's stored correction of the day, to 0.1."""
    start = datetime(DAYS[day].year, DAYS[day].month, DAYS[day].day, hour, tzinfo=UTC)
    rows = conn.execute(
        "SELECT r.cell, r.pm25_ugm3, c.offset_ugm3, c.gain, c.humid_gain, c.temp_coeff"
        " FROM readings r JOIN calibration_periods p ON p.kit_id = r.kit_id"
        " AND p.metric = 'pm25' AND r.ts >= p.valid_from AND r.ts < p.valid_to"
        " JOIN calibration_corrections c ON c.version = p.version AND c.kit_id = p.kit_id"
        " WHERE r.ts >= %s AND r.ts < %s AND r.cell IS NOT NULL",
        (start, start + timedelta(hours=1)),
    ).fetchall()
    in_cell = [h3i.cell_to_parent(int(row[0]), 10) == PLACE_CELL for row in rows]
    # Raw values are the kit's 0.1 µg/m³ steps (stored as float32), and corrected ones are
    # rounded to the same resolution before they are summed, as raw ones are.
    values = [
        round((round(raw, 1) - o) / g, 1)
        for (_, raw, o, g, q, t), inside in zip(rows, in_cell, strict=True)
        if inside
        if q == 0 and t == 0
    ]
    assert len(values) == sum(in_cell) > 0
    return float(np.mean(values))


def test_pairs_and_corrections_are_stored_and_a_refit_is_idempotent(
    conn: psycopg.Connection[Any],
) -> None:
    report = _fit(conn)
    assert len(report.periods) == 2
    # Every kit stood at the station 6 readings (>= 3) in each of 12 hours a day.
    pairs = _table(
        conn, "SELECT kit_id, count(*), min(n) FROM calibration_pairs GROUP BY kit_id ORDER BY 1"
    )
    assert pairs == [(kit, 24, 6) for kit in KITS]
    assert report.pairs.inserted == 72
    stored = list_corrections(conn, metric="pm25")
    own = [s for s in stored if s.correction.kit_id is not None]
    assert len(own) == 2 * len(KITS)
    for s in own:
        c = s.correction
        gain, offset = KITS[int(c.kit_id or 0)]
        assert c.source == "kit"
        assert c.kit_pairs == 12
        assert abs(c.gain - gain) < 4 * c.se("gain") + 0.01
        assert abs(c.offset - offset) < 4 * c.se("offset") + 0.1
        assert s.valid_to is not None
        assert s.valid_from is not None
        assert s.valid_to - s.valid_from == timedelta(days=1)
    fleet = [s for s in stored if s.correction.kit_id is None]
    assert len(fleet) == 2
    assert all(s.correction.source == "fleet" for s in fleet)
    covariance = _table(conn, "SELECT covariance FROM calibration_corrections LIMIT 1")[0][0]
    assert len(covariance) == 16

    before = {
        name: _table(conn, f"SELECT * FROM {name} ORDER BY 1, 2, 3")
        for name in ("calibration_corrections", "calibration_periods", "cell_windows_corrected")
    }
    days_before = _table(conn, "SELECT day, metric, versions, applied_at FROM calibration_days")
    again = _fit(conn)
    assert again.fit.new_corrections == 0
    assert again.applied is not None
    assert again.applied.recomputed == []
    assert len(again.applied.unchanged) == 2
    for name, rows in before.items():
        assert _table(conn, f"SELECT * FROM {name} ORDER BY 1, 2, 3") == rows, name
    assert (
        _table(conn, "SELECT day, metric, versions, applied_at FROM calibration_days")
        == days_before
    )


def test_corrected_cell_means_are_the_stored_corrections_applied_to_the_raw_readings(
    conn: psycopg.Connection[Any],
) -> None:
    _fit(conn)
    for day in range(len(DAYS)):
        for hour in (9, 14, 19):
            raw = cell_stats(conn, _sel(day, corrected=False, hour=hour), BOX)
            corr = cell_stats(conn, _sel(day, corrected=True, hour=hour), BOX)
            assert raw["cell"].tolist() == corr["cell"].tolist() == [PLACE_CELL]
            assert corr["n"][0] == raw["n"][0] == 90  # 3 kits × 30 readings
            assert corr["rides"][0] == raw["rides"][0] == 3
            expected = _independent_mean(conn, day, hour)
            assert corr["mean"][0] == pytest.approx(expected, rel=1e-9)
            # The correction brings the cell mean to the truth; the raw one is off.
            truth = place_truth(day, hour)
            assert abs(corr["mean"][0] - truth) < 0.3
            assert abs(raw["mean"][0] - truth) > 1.0
            assert corr["correction_u"][0] > 0
            assert np.isnan(raw["correction_u"][0])


def test_a_refit_recomputes_what_it_touches_and_nothing_else(
    conn: psycopg.Connection[Any],
) -> None:
    _fit(conn)
    day0 = "window_start < '2026-11-22'"
    day1 = "window_start >= '2026-11-22'"
    rows = "SELECT * FROM cell_windows_corrected WHERE {} ORDER BY 1, 2, 3, 4"
    first0 = _table(conn, rows.format(day0))
    first1 = _table(conn, rows.format(day1))
    applied0 = _table(conn, "SELECT applied_at FROM calibration_days WHERE day = '2026-11-21'")
    # The network revises the second day's values by +5 %: only its corrections change.
    store_reference(conn, parse_reference(reference_csv(scale_day1=1.05)))
    report = _fit(conn)
    assert report.applied is not None
    assert report.applied.recomputed == [DAYS[1]]
    assert report.applied.unchanged == [DAY0]
    assert _table(conn, rows.format(day0)) == first0
    assert (
        _table(conn, "SELECT applied_at FROM calibration_days WHERE day = '2026-11-21'") == applied0
    )
    second1 = _table(conn, rows.format(day1))
    assert [r[:4] for r in second1] == [r[:4] for r in first1]  # the same cell-windows
    assert second1 != first1
    # Corrected means of day 1 rise by the 5 % the reference did (gain fitted 5 % lower).
    after = cell_stats(conn, _sel(1, corrected=True), BOX)["mean"][0]
    assert after == pytest.approx(_independent_mean(conn, 1, 10), rel=1e-9)
    # The replaced corrections are kept, no longer in force.
    assert len(list_corrections(conn, metric="pm25", include_replaced=True)) > len(
        list_corrections(conn, metric="pm25")
    )
    # Raw aggregates are untouched by all of this.
    raw = cell_stats(conn, _sel(1, corrected=False), BOX)
    assert raw["n"][0] == 90


def test_late_readings_hide_a_corrected_window_until_it_is_corrected_again(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """A corrected row stands for exactly the raw row's readings, or is not shown."""
    from functools import partial  # noqa: PLC0415

    from storage.writer import write_batch  # noqa: PLC0415
    from stream.core.aggregate import aggregate  # noqa: PLC0415
    from tests.api.api_factories import ride  # noqa: PLC0415

    _fit(conn)
    late = ride(
        kit_id=11,
        ride_id=9999,
        start=PLACE,
        n=4,
        t0_ms=int(datetime(2026, 11, 21, 10, 50, tzinfo=UTC).timestamp() * 1000),
        seq0=90_000,
    )
    write_batch(conn, late, partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS))
    assert len(cell_stats(conn, _sel(0, corrected=False), BOX)) == 1
    assert len(cell_stats(conn, _sel(0, corrected=True), BOX)) == 0
    series = time_series(conn, _sel(0, corrected=True), 3600, cell=PLACE_CELL)
    assert len(series) == 0
    report = apply_range(conn, *RANGE, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS, force=True)
    assert len(report.recomputed) == 2
    shown = cell_stats(conn, _sel(0, corrected=True), BOX)
    assert shown["n"].tolist() == [94]
    assert shown["mean"][0] == pytest.approx(_independent_mean(conn, 0, 10), rel=1e-9)
