"""The tile query against the real database: sums of exactly the cell-windows the public may see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from storage.cell_means import cell_means
from storage.retention import expire_presence
from storage.selection import BBox, Selection
from storage.writer import MS_PER_DAY, write_batch
from stream.core.partials import Metric
from tests.storage.storage_factories import T0_MS, make_readings
from tests.storage.storage_reference import ReferenceAggregate, ride_counts

pytestmark = pytest.mark.postgres

AGGREGATE = ReferenceAggregate(resolutions=(8, 10), windows_s=(3600, 86_400))
EVERYWHERE = BBox(-180, -90, 180, 90)
#: Where rides start: one kit at each of the first two, the rest at the third.
STARTS = ((52.090, 5.120), (52.095, 5.125), (52.100, 5.130))


def fleet() -> np.ndarray:
    """Three days; kits 1-5 ride on day 0 and 1, only kits 3 and 4 on day 2 (4 half
    the way); five minutes each, a few minutes apart in the same hour, so the third
    start's cells hold three rides an hour (two or one on day 2) and the others one."""
    parts = []
    for day in range(3):
        for kit in (1, 2, 3, 4, 5) if day < 2 else (3, 4):
            lat0, lon0 = STARTS[min(kit, 3) - 1]
            n = 30 if (day, kit) == (2, 4) else 60
            parts.append(
                make_readings(
                    n,
                    kit_id=kit,
                    boot_id=day + 1,
                    ride_id=100 * day + kit,
                    seed=10 * day + kit,
                    step_ms=5_000,
                    lat0=lat0,
                    lon0=lon0,
                    t0_ms=T0_MS + day * MS_PER_DAY + kit * 360_000,
                )
            )
    return np.concatenate(parts)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        everything = fleet()
        # Overlapping batches and a replay: the ride counts must still be exact.
        for a, b in [(0, 300), (200, 500), (0, 690), (450, 690)]:
            write_batch(c, everything[a:b], AGGREGATE)
        yield c


def expected(sel: Selection) -> dict[int, tuple[int, float]]:
    """Per cell: (n, Σx) over the cell-windows with at least k distinct rides, for the
    cells whose passing windows saw rides on at least ``min_days`` days; from the
    reference aggregation of every reading at once."""
    partials, presence = AGGREGATE(fleet())
    counts = ride_counts(presence)
    start_ms, end_ms = sel.start.timestamp() * 1000, sel.end.timestamp() * 1000
    sums: dict[int, tuple[int, float]] = {}
    days: dict[int, set[int]] = {}
    for p in partials[
        (partials["metric"] == sel.metric)
        & (partials["resolution"] == sel.resolution)
        & (partials["window_s"] == sel.window_s)
        & (partials["window_start_ms"] >= start_ms)
        & (partials["window_start_ms"] < end_ms)
    ]:
        cell = int(p["cell"])
        rides, window_days = counts[(sel.resolution, sel.window_s, cell, int(p["window_start_ms"]))]
        if rides >= sel.min_rides:
            n, s = sums.get(cell, (0, 0.0))
            sums[cell] = (n + int(p["n"]), s + float(p["sum"]))
            days.setdefault(cell, set()).update(window_days)
    return {c: v for c, v in sums.items() if len(days[c]) >= sel.min_days}


def tile_sums(conn: psycopg.Connection[Any], sel: Selection) -> dict[int, tuple[int, float]]:
    async def run() -> np.ndarray:
        async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as ac:
            return await cell_means(ac, sel, EVERYWHERE)

    out = asyncio.run(run())
    assert len(np.unique(out["cell"])) == len(out)
    return {int(r["cell"]): (int(r["n"]), float(r["sum"])) for r in out}


def assert_same(got: dict[int, tuple[int, float]], want: dict[int, tuple[int, float]]) -> None:
    assert got.keys() == want.keys()
    for cell, (n, s) in want.items():
        assert got[cell][0] == n
        assert got[cell][1] == pytest.approx(s, rel=1e-12)


def selection(window_s: int, k: int, min_days: int) -> Selection:
    t0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
    return Selection(
        Metric.PM25,
        10,
        window_s,
        t0 - timedelta(days=1),
        t0 + timedelta(days=4),
        min_rides=k,
        min_days=min_days,
    )


@pytest.mark.parametrize(
    ("window_s", "k", "min_days"),
    [
        (3600, 0, 0),  # a keyed role: everything
        (3600, 2, 0),
        (3600, 3, 0),
        (3600, 4, 0),  # nobody
        (86_400, 3, 0),
        (86_400, 3, 2),
        (86_400, 3, 3),
        (86_400, 2, 3),
    ],
)
def test_the_sums_are_those_of_the_passing_cell_windows(
    conn: psycopg.Connection[Any], window_s: int, k: int, min_days: int
) -> None:
    sel = selection(window_s, k, min_days)
    assert_same(tile_sums(conn, sel), expected(sel))


def test_the_thresholds_hide_some_cells_and_not_others(conn: psycopg.Connection[Any]) -> None:
    # The cases above are not vacuous: k and the days each remove cells, not all of them.
    everything = tile_sums(conn, selection(3600, 0, 0))
    public = tile_sums(conn, selection(3600, 3, 0))
    assert 0 < len(public) < len(everything)
    assert tile_sums(conn, selection(3600, 4, 0)) == {}
    daily = tile_sums(conn, selection(86_400, 2, 0))
    three_days = tile_sums(conn, selection(86_400, 2, 3))
    assert 0 < len(three_days) < len(daily)


def test_expired_short_windows_are_not_public_any_more(conn: psycopg.Connection[Any]) -> None:
    expire_presence(conn, datetime.fromtimestamp(T0_MS / 1000, UTC) + timedelta(days=10))
    assert tile_sums(conn, selection(3600, 3, 0)) == {}
    # Day windows keep their counts; keyed roles never needed them.
    assert expected(selection(86_400, 3, 0)) != {}
    assert_same(tile_sums(conn, selection(86_400, 3, 0)), expected(selection(86_400, 3, 0)))
    assert_same(tile_sums(conn, selection(3600, 0, 0)), expected(selection(3600, 0, 0)))
