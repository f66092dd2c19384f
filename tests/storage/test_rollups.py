"""Weekly roll-ups (storage.rollups) and the long-range cells read from them
(storage.long_cells): the same figures as the daily windows give, late data included
after a refresh, and never for a selection with k."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

import storage.long_cells
from storage.cell_stats import cell_stats, cell_stats_with
from storage.long_cells import rolls_up
from storage.rollups import DAY_S, WEEK_S, refresh_rollups
from storage.selection import BBox, Selection
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.partials import Metric
from tests.storage.storage_factories import T0_MS, make_readings

pytestmark = pytest.mark.postgres

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(3600, 86400), day_tz="Europe/Amsterdam"
)
DAY_MS = 86_400_000
#: The first day of the data, a UTC midnight (T0 is 08:00 UTC).
DAY0 = datetime.fromtimestamp(T0_MS // DAY_MS * DAY_MS / 1000, UTC)
UTRECHT = BBox(5.0, 52.0, 5.3, 52.2)
DAYS = 30


def _ride(day: int, hour: float, n: int, kit: int, seed: int) -> np.ndarray:
    """A ride of ``kit`` starting ``hour`` h after UTC midnight of DAY0 + ``day``, with an
    id that tells its start (as stream.core.rides makes them)."""
    t0_ms = int(DAY0.timestamp() * 1000 + day * DAY_MS + hour * 3_600_000)
    ride_id = (t0_ms // 1000) << 29 | kit
    rows = make_readings(
        n, kit_id=kit, boot_id=day + 1, t0_ms=t0_ms, step_ms=10_000, ride_id=ride_id, seed=seed
    )
    rows["pm25_ugm3"][seed % 5 :: 9] = np.nan  # some readings lack the metric
    return rows


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        for day in range(DAYS):
            for kit in (1, 2, 3):
                if (day + kit) % 4:
                    write_batch(c, _ride(day, 6 + kit, 300, kit, day * 3 + kit), AGGREGATE)
            # Across local midnight (22:30 UTC is 23:30 or 00:30 in Amsterdam), so
            # across UTC days and, once a week, weeks.
            write_batch(c, _ride(day, 22.5, 400, 4, 1000 + day), AGGREGATE)
        yield c


def _long(
    metric: Metric = Metric.PM25, start_day: int = 0, end_day: int = DAYS + 1, **kw: Any
) -> Selection:
    return Selection(
        metric, 10, 86400, DAY0 + timedelta(days=start_day), DAY0 + timedelta(days=end_day), **kw
    )


def _without_rollups(monkeypatch: pytest.MonkeyPatch, read: Any) -> Any:
    """``read()`` through the queries over the daily windows alone (storage.cell_stats')."""
    with monkeypatch.context() as m:
        m.setattr(storage.long_cells, "MIN_RANGE_S", 10**12)
        return read()


def _same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal figures: counts, extremes, percentiles and rides exactly; sums of floats
    up to their order."""
    assert a["cell"].tolist() == b["cell"].tolist()
    for name in a.dtype.names or ():
        if a.dtype[name].kind in "iu":
            assert a[name].tolist() == b[name].tolist(), name
        else:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, equal_nan=True, err_msg=name)


NOW = DAY0 + timedelta(days=DAYS + 2)


def test_long_ranges_from_rollups_are_the_daily_figures(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = refresh_rollups(conn, NOW)
    assert report.rolled >= 2 * 4  # both resolutions, every week that is over
    assert conn.execute("SELECT count(*) FROM weekly_presence").fetchone() != (0,)
    for start_day in range(7):  # every alignment of the range to the weeks
        for metric in (Metric.PM25, Metric.NOISE, Metric.HUMIDITY):
            sel = _long(metric, start_day=start_day, end_day=DAYS + 1 - start_day % 3)
            assert rolls_up(sel)
            daily = _without_rollups(monkeypatch, lambda s=sel: cell_stats(conn, s, UTRECHT))
            assert len(daily) > 0
            _same(cell_stats(conn, sel, UTRECHT), daily)
    pair = _long(Metric.PM25, start_day=2)
    daily_pair = _without_rollups(
        monkeypatch, lambda: cell_stats_with(conn, pair, Metric.HUMIDITY, UTRECHT)
    )
    rolled_pair = cell_stats_with(conn, pair, Metric.HUMIDITY, UTRECHT)
    _same(rolled_pair[0], daily_pair[0])
    _same(rolled_pair[1], daily_pair[1])


def test_late_data_shows_after_the_next_refresh(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh_rollups(conn, NOW)
    assert refresh_rollups(conn, NOW).rolled == 0  # nothing changed, nothing rolled again
    # A kit uploads a ride of day 3, long after its week was rolled up.
    write_batch(conn, _ride(3, 12, 200, 9, 77), AGGREGATE)
    sel = _long()
    daily = _without_rollups(monkeypatch, lambda: cell_stats(conn, sel, UTRECHT))
    report = refresh_rollups(conn, NOW)
    assert report.rolled == 2  # that week, at both resolutions
    _same(cell_stats(conn, sel, UTRECHT), daily)
    assert daily["rides"].sum() > 0


def test_a_week_not_over_is_rolled_up_to_date(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The days of a week not over that are over are rolled up (rollup_weeks.days); the
    week is rolled up again to date when marks change a day it holds or another day is
    over, not for changes of the days not over, and whole once it is over; reads give
    the daily figures throughout."""
    # The second week of the data, every day of it with rides; the first is over.
    week1 = int(DAY0.timestamp()) // WEEK_S + 1
    first_day = 7 * week1 - int(DAY0.timestamp()) // DAY_S  # from DAY0, 1..7
    # Day 7w + 1 is over 6 h after its end; not day 7w + 2.
    now = DAY0 + timedelta(days=first_day + 2, hours=7)
    marks = conn.execute("SELECT count(*) FROM rollup_marks").fetchone()
    report = refresh_rollups(conn, now)
    assert report.rolled >= 2
    assert report.to_date == 2  # the second week, at both resolutions
    assert report.pending >= 2 * 3
    assert conn.execute(
        "SELECT resolution, days FROM rollup_weeks WHERE week = %s ORDER BY 1", (week1,)
    ).fetchall() == [(8, 2), (10, 2)]
    # The writer's marks, one per batch and week, are folded into one per week.
    assert marks is not None
    assert marks[0] > report.pending
    assert conn.execute("SELECT count(*) FROM rollup_marks").fetchone() == (report.pending,)

    def same_as_daily() -> None:
        for end_day in (first_day + 1, first_day + 2, first_day + 3, DAYS + 1):
            for metric in (Metric.PM25, Metric.NOISE):
                sel = _long(metric, start_day=first_day - 14, end_day=end_day)
                assert rolls_up(sel)
                daily = _without_rollups(monkeypatch, lambda s=sel: cell_stats(conn, s, UTRECHT))
                assert len(daily) > 0
                _same(cell_stats(conn, sel, UTRECHT), daily)
        pair = _long(Metric.PM25, start_day=first_day - 7)
        daily_pair = _without_rollups(
            monkeypatch, lambda: cell_stats_with(conn, pair, Metric.HUMIDITY, UTRECHT)
        )
        rolled_pair = cell_stats_with(conn, pair, Metric.HUMIDITY, UTRECHT)
        _same(rolled_pair[0], daily_pair[0])
        _same(rolled_pair[1], daily_pair[1])

    same_as_daily()
    assert refresh_rollups(conn, now).to_date == 0  # nothing changed in the days rolled up
    # A ride of a day not over changes nothing rolled up.
    write_batch(conn, _ride(first_day + 2, 9, 100, 8, 55), AGGREGATE)
    assert refresh_rollups(conn, now).to_date == 0
    same_as_daily()
    # A late ride of a day rolled up: rolled up again.
    write_batch(conn, _ride(first_day + 1, 12, 200, 9, 77), AGGREGATE)
    same_before = _without_rollups(
        monkeypatch, lambda: cell_stats(conn, _long(start_day=0), UTRECHT)
    )
    assert refresh_rollups(conn, now).to_date == 2
    _same(cell_stats(conn, _long(start_day=0), UTRECHT), same_before)
    same_as_daily()
    # The next day over: rolled up to it.
    report = refresh_rollups(conn, now + timedelta(days=1))
    assert report.to_date == 2
    assert conn.execute(
        "SELECT DISTINCT days FROM rollup_weeks WHERE week = %s", (week1,)
    ).fetchall() == [(3,)]
    same_as_daily()
    # Once over, the week is rolled up whole.
    refresh_rollups(conn, NOW)
    assert conn.execute(
        "SELECT DISTINCT days FROM rollup_weeks WHERE week = %s", (week1,)
    ).fetchall() == [(7,)]
    same_as_daily()


def test_the_public_never_reads_rollups(conn: psycopg.Connection[Any]) -> None:
    public = _long(min_rides=2, min_days=1, unit_resolution=10, unit_window_s=3600)
    assert not rolls_up(public)
    assert not rolls_up(_long(unit_resolution=10, unit_window_s=3600))
    assert not rolls_up(_long(corrected=True))
    assert not rolls_up(_long(end_day=13))
    before = cell_stats(conn, public, UTRECHT)
    refresh_rollups(conn, NOW)
    _same(cell_stats(conn, public, UTRECHT), before)


def _week_end_day() -> int:
    """The day (from DAY0) that is the last day of a week, in the second week."""
    days = int(DAY0.timestamp()) // 86_400
    return 7 * (days // 7) + 13 - days


def test_a_late_ride_reaching_into_later_weeks_is_rolled_up_whole(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh_rollups(conn, NOW)
    # A ride starting on the last evening of a week and going on for 33 hours: its
    # presence is of its day's week, in daily windows of the next week, further than any
    # ride before it went; only its marks tell where they are.
    day = _week_end_day()
    t0_ms = int(DAY0.timestamp() * 1000 + day * DAY_MS + 20 * 3_600_000)
    rows = make_readings(
        2000,
        kit_id=11,
        boot_id=99,
        t0_ms=t0_ms,
        step_ms=60_000,
        ride_id=(t0_ms // 1000) << 29 | 11,
        seed=5,
    )
    write_batch(conn, rows, AGGREGATE)
    report = refresh_rollups(conn, NOW)
    assert report.rolled == 2 * 2  # its day's week and the next, at both resolutions
    for start_day in (0, 1):
        sel = _long(start_day=start_day)
        daily = _without_rollups(monkeypatch, lambda s=sel: cell_stats(conn, s, UTRECHT))
        _same(cell_stats(conn, sel, UTRECHT), daily)


def test_a_merge_the_refresh_does_not_see_is_rolled_up_the_next_round(
    conn: psycopg.Connection[Any], migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh_rollups(conn, NOW)
    with psycopg.connect(migrated_database_url) as writer, writer.transaction():
        # Merged and marked, not committed: the round's snapshot does not see it ...
        write_batch(writer, _ride(3, 12, 200, 9, 77), AGGREGATE)
        assert refresh_rollups(conn, NOW).rolled == 0
    # ... and its mark, committed with it, is still there for the next round.
    report = refresh_rollups(conn, NOW)
    assert report.rolled == 2
    sel = _long()
    daily = _without_rollups(monkeypatch, lambda: cell_stats(conn, sel, UTRECHT))
    _same(cell_stats(conn, sel, UTRECHT), daily)
    # Only the marks of the week not over yet are left.
    assert conn.execute("SELECT count(*) FROM rollup_marks").fetchone() == (report.pending,)
