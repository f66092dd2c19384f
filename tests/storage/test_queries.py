"""Reads for the API (storage.selection, merged_stats, cell_stats, time_series), against
data written by the batch writer with the stream's own aggregation."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from h3.api import basic_int as h3int

from storage.cell_stats import acell_stats, cell_stats, cell_stats_with, combines
from storage.exceptions import QueryError
from storage.selection import BBox, Selection
from storage.time_series import atime_series, time_series
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.partials import Metric
from stream.core.resolution import quantise
from tests.storage.storage_factories import T0_MS, make_readings

pytestmark = pytest.mark.postgres

RESOLUTIONS = (8, 10)
WINDOWS = (60, 3600)
AGGREGATE = functools.partial(
    aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS, day_tz="UTC"
)
T0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
EVERYWHERE = BBox(-180, -90, 180, 90)
UTRECHT = BBox(5.0, 52.0, 5.3, 52.2)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def selection(
    metric: Metric = Metric.PM25, res: int = 10, window_s: int = 60, hours: int = 2, **kw: int
) -> Selection:
    return Selection(metric, res, window_s, T0, T0 + timedelta(hours=hours), **kw)


def test_cell_stats_match_the_readings(conn: psycopg.Connection[Any]) -> None:
    ride1 = make_readings(600, ride_id=11, seed=1)
    ride2 = make_readings(300, kit_id=2, ride_id=12, seed=2, t0_ms=T0_MS + 1_800_000)
    ride2["pm25_ugm3"][::7] = np.nan  # some readings lack the metric
    for part in (ride1[:400], ride2, ride1[400:]):
        write_batch(conn, part, AGGREGATE)
    everything = np.concatenate([ride1, ride2])
    stats = cell_stats(conn, selection(), UTRECHT)
    parents = np.array([h3int.cell_to_parent(int(c), 10) for c in everything["cell"]])
    assert stats["cell"].tolist() == sorted(set(parents.tolist()))
    for row in stats:
        # Aggregated at the kit's decimals, not the float32 stored (stream.core.resolution).
        x = quantise(Metric.PM25, everything["pm25_ugm3"][parents == row["cell"]])
        x = x[~np.isnan(x)]
        assert row["n"] == len(x)
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-9)
        assert row["min"] == pytest.approx(x.min())
        assert row["max"] == pytest.approx(x.max())
        if len(x) > 1:
            assert row["std"] == pytest.approx(x.std(ddof=1), rel=1e-6)
        assert row["min"] <= row["p50"] <= row["p95"] <= row["max"]
        assert np.isnan(row["laeq_db"])
        lat, lon = h3int.cell_to_latlng(int(row["cell"]))
        assert (row["lat_deg"], row["lon_deg"]) == pytest.approx((lat, lon))
        assert row["days"] == 1
        assert row["rides"] == len(set(everything["ride_id"][parents == row["cell"]].tolist()))
        # Each ride's weight: its readings in the cell over the selection (every reading
        # here counts for some metric), summed over the 60-s windows it spans.
        per_ride = np.unique(everything["ride_id"][parents == row["cell"]], return_counts=True)[1]
        assert row["ride_weight"] == per_ride.sum()
        assert row["ride_weight_sq"] == (per_ride.astype(np.float64) ** 2).sum()
    # Same numbers from 1-hour windows, and nothing outside the bbox or the time range.
    hourly = cell_stats(conn, selection(window_s=3600), UTRECHT)
    assert hourly["n"].tolist() == stats["n"].tolist()
    assert len(cell_stats(conn, selection(), BBox(6.0, 52.0, 6.3, 52.2))) == 0
    later = Selection(Metric.PM25, 10, 60, T0 + timedelta(hours=3), T0 + timedelta(hours=4))
    assert len(cell_stats(conn, later, UTRECHT)) == 0


def test_noise_laeq_is_the_energy_mean(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(2, step_ms=10_000)
    batch["noise_laeq_db"] = [60.0, 80.0]
    batch["noise_lamax_db"] = [65.0, 91.5]
    batch["lat_deg"], batch["lon_deg"] = 52.09, 5.12  # one cell
    batch["cell"] = h3int.latlng_to_cell(52.09, 5.12, 12)
    write_batch(conn, batch[1:], AGGREGATE)
    write_batch(conn, batch[:1], AGGREGATE)
    (row,) = cell_stats(conn, selection(Metric.NOISE), UTRECHT)
    assert round(float(row["laeq_db"]), 1) == 77.0
    assert row["mean"] == 70.0  # the arithmetic mean, for contrast
    assert row["lamax_db"] == 91.5
    assert row["duration_s"] == 20.0


def test_privacy_thresholds(conn: psycopg.Connection[Any]) -> None:
    # Three rides through the same spot in the same minute; one more ride alone elsewhere.
    for ride in (1, 2, 3):
        write_batch(conn, make_readings(5, kit_id=ride, ride_id=ride, seed=ride), AGGREGATE)
    write_batch(conn, make_readings(5, kit_id=9, ride_id=9, lat0=52.15, lon0=5.2), AGGREGATE)
    everyone = cell_stats(conn, selection(), UTRECHT)
    k3 = cell_stats(conn, selection(min_rides=3), UTRECHT)
    assert len(k3) < len(everyone)
    assert (k3["rides"] >= 3).all()
    assert len(cell_stats(conn, selection(min_days=2), UTRECHT)) == 0


def test_time_series_for_a_cell_and_a_bbox(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(3 * 3600 // 10, step_ms=10_000, seed=4)  # 3 hours, 1 reading / 10 s
    batch["lat_deg"], batch["lon_deg"] = 52.09, 5.12
    batch["cell"] = h3int.latlng_to_cell(52.09, 5.12, 12)
    write_batch(conn, batch, AGGREGATE)
    cell = h3int.cell_to_parent(int(batch["cell"][0]), 8)
    sel = Selection(Metric.PM10, 8, 60, T0, T0 + timedelta(hours=3))
    series = time_series(conn, sel, 3600, cell=cell)
    assert series["window_start_ms"].tolist() == [T0_MS + h * 3_600_000 for h in range(3)]
    assert series["n"].tolist() == [360, 360, 360]
    for h, row in enumerate(series):
        x = quantise(Metric.PM10, batch["pm10_ugm3"][h * 360 : (h + 1) * 360])
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-9)
        assert row["max"] == pytest.approx(x.max())
    by_bbox = time_series(conn, sel, 1800, bbox=UTRECHT)
    assert by_bbox["n"].sum() == 1080
    assert len(by_bbox) == 6
    with pytest.raises(QueryError, match="exactly one"):
        time_series(conn, sel, 3600)
    with pytest.raises(QueryError, match="multiple of the window"):
        time_series(conn, sel, 90, cell=cell)
    with pytest.raises(QueryError, match="resolution 8"):
        time_series(conn, sel, 3600, cell=int(batch["cell"][0]))


def test_bad_selections_are_refused() -> None:
    with pytest.raises(QueryError, match="before end"):
        Selection(Metric.PM25, 10, 60, T0, T0)
    with pytest.raises(QueryError, match="timezone-aware"):
        Selection(Metric.PM25, 10, 60, T0.replace(tzinfo=None), T0)
    with pytest.raises(QueryError, match="resolution"):
        Selection(Metric.PM25, 16, 60, T0, T0 + timedelta(hours=1))
    with pytest.raises(QueryError, match="latitudes"):
        BBox(0, 10, 1, 5)


def test_antimeridian_bbox(conn: psycopg.Connection[Any]) -> None:
    fiji = make_readings(5, lat0=-17.8, lon0=179.99, seed=5)
    samoa = make_readings(5, kit_id=2, lat0=-13.8, lon0=-171.8, seed=6)
    utrecht = make_readings(5, kit_id=3, seed=7)
    for batch in (fiji, samoa, utrecht):
        write_batch(conn, batch, AGGREGATE)
    stats = cell_stats(conn, selection(), BBox(170, -30, -160, 0))
    assert stats["n"].sum() == 10


def test_async_twins(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        write_batch(conn, make_readings(120, seed=3), AGGREGATE)
        sync_cells = cell_stats(conn, selection(), UTRECHT)
        sync_series = time_series(conn, selection(), 600, bbox=UTRECHT)

    async def run() -> tuple[np.ndarray, np.ndarray]:
        async with await psycopg.AsyncConnection.connect(
            migrated_database_url, autocommit=True
        ) as aconn:
            cells = await acell_stats(aconn, selection(), UTRECHT)
            series = await atime_series(aconn, selection(), 600, bbox=UTRECHT)
            return cells, series

    cells, series = asyncio.run(run())
    assert cells.tobytes() == sync_cells.tobytes()
    assert series.tobytes() == sync_series.tobytes()


@pytest.fixture(params=["plain", "timescale"])
def any_backend_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend (TimescaleDB's skips where there is none)."""
    return str(request.getfixturevalue(f"{request.param}_database_url"))


def test_gap_filled_series_have_explicit_empty_buckets(any_backend_url: str) -> None:
    """An hour without data is an empty bucket (count 0, no value), not a missing one; the
    same output on both backends (time_bucket_gapfill, generate_series)."""
    first = make_readings(360, step_ms=10_000, seed=4)  # T0 .. T0+1h
    later = make_readings(
        180, kit_id=2, ride_id=2, step_ms=10_000, seed=5, t0_ms=T0_MS + 3 * 3_600_000
    )  # T0+3h .. T0+3.5h
    for batch in (first, later):
        batch["lat_deg"], batch["lon_deg"] = 52.09, 5.12
        batch["cell"] = h3int.latlng_to_cell(52.09, 5.12, 12)
    cell = h3int.cell_to_parent(int(first["cell"][0]), 8)
    # From the middle of the hour before T0 to the middle of the fifth hour after it.
    sel = Selection(
        Metric.PM10, 8, 60, T0 - timedelta(minutes=30), T0 + timedelta(hours=4, minutes=30)
    )
    with psycopg.connect(any_backend_url, autocommit=True) as conn:
        for batch in (first, later):
            write_batch(conn, batch, AGGREGATE)
        sparse = time_series(conn, sel, 3600, cell=cell)
        filled = time_series(conn, sel, 3600, cell=cell, gapfill=True)
        by_bbox = time_series(conn, sel, 3600, bbox=UTRECHT, gapfill=True)
        hidden = time_series(
            conn,
            Selection(Metric.PM10, 8, 60, sel.start, sel.end, min_rides=2),
            3600,
            cell=cell,
            gapfill=True,
        )
        with pytest.raises(QueryError, match="too long"):
            time_series(
                conn,
                Selection(Metric.PM10, 8, 60, T0, T0 + timedelta(days=1200)),
                60,
                cell=cell,
                gapfill=True,
            )

    async def run() -> np.ndarray:
        async with await psycopg.AsyncConnection.connect(any_backend_url, autocommit=True) as aconn:
            return await atime_series(aconn, sel, 3600, cell=cell, gapfill=True)

    hours = [T0_MS + h * 3_600_000 for h in range(-1, 5)]
    assert sparse["window_start_ms"].tolist() == [hours[1], hours[4]]
    assert filled["window_start_ms"].tolist() == hours
    assert filled["n"].tolist() == [0, 360, 0, 0, 180, 0]
    assert filled["rides"].tolist() == [0, 1, 0, 0, 1, 0]
    data = filled["n"] > 0
    assert filled[data].tobytes() == sparse.tobytes()  # the buckets with data: as sparse
    for name in ("mean", "std", "min", "max", "p50", "p95", "lat_deg"):
        assert np.isnan(filled[name][~data]).all(), name
    assert (filled["window_s"] == 3600).all()
    assert (filled["metric"] == int(Metric.PM10)).all()
    assert by_bbox["window_start_ms"].tolist() == hours
    assert by_bbox["n"].tolist() == filled["n"].tolist()
    # Buckets withheld by the privacy thresholds look like buckets without data.
    assert hidden["window_start_ms"].tolist() == hours
    assert hidden["n"].tolist() == [0] * 6
    assert asyncio.run(run()).tobytes() == filled.tobytes()


def test_ride_weights_are_noise_energy_for_noise_and_unknown_when_not_stored(
    conn: psycopg.Connection[Any],
) -> None:
    # Two rides through one cell: one loud reading, and three quiet ones of the other.
    loud = make_readings(1, ride_id=1, seed=1)
    quiet = make_readings(3, kit_id=2, ride_id=2, seed=2, t0_ms=T0_MS + 60_000)
    loud["noise_laeq_db"], quiet["noise_laeq_db"] = 80.0, 50.0
    for rows in (loud, quiet):
        rows["lat_deg"], rows["lon_deg"] = 52.09, 5.12
        rows["cell"] = h3int.latlng_to_cell(52.09, 5.12, 12)
        write_batch(conn, rows, AGGREGATE)
    t = loud["interval_ms"][0] / 1000.0
    energies = np.array([t * 10**8.0, 3 * t * 10**5.0])
    (noise,) = cell_stats(conn, selection(Metric.NOISE), UTRECHT)
    assert noise["ride_weight"] == pytest.approx(energies.sum(), rel=1e-12)
    assert noise["ride_weight_sq"] == pytest.approx((energies**2).sum(), rel=1e-12)
    (pm,) = cell_stats(conn, selection(), UTRECHT)
    assert (pm["ride_weight"], pm["ride_weight_sq"]) == (4.0, 10.0)
    (hourly,) = time_series(conn, selection(), 3600, bbox=UTRECHT)
    assert (hourly["ride_weight"], hourly["ride_weight_sq"]) == (4.0, 10.0)
    # A presence row stored before its ride's weight was kept makes the sums unknown.
    conn.execute("UPDATE window_presence SET readings = NULL WHERE ride_id = 2")
    (pm,) = cell_stats(conn, selection(), UTRECHT)
    assert np.isnan(pm["ride_weight"])
    assert np.isnan(pm["ride_weight_sq"])
    assert pm["rides"] == 2
    (noise,) = cell_stats(conn, selection(Metric.NOISE), UTRECHT)
    assert np.isfinite(noise["ride_weight_sq"])  # its noise energy is still known


@pytest.mark.parametrize(
    ("metric", "other"), [(Metric.PM25, Metric.HUMIDITY), (Metric.NO2, Metric.TEMPERATURE)]
)
def test_a_covariate_in_the_same_pass_is_what_its_own_query_gives(
    any_backend_url: str, metric: Metric, other: Metric
) -> None:
    """cell_stats_with: the metric's cells exactly as cell_stats gives them, and the
    covariate's figures in those cells as its own cell_stats does, where either metric
    lacks readings in some cell-windows or in a whole cell."""
    rides = [
        make_readings(600, ride_id=11, seed=1),
        make_readings(300, kit_id=2, ride_id=12, seed=2, t0_ms=T0_MS + 1_800_000),
        make_readings(200, kit_id=3, ride_id=13, seed=3, lat0=52.1, lon0=5.2),
    ]
    rng = np.random.default_rng(8)
    for ride in rides:
        ride["no2_ugm3"] = rng.uniform(5, 50, len(ride))
        ride["humidity_pct"] = rng.uniform(40, 99, len(ride))
        ride["temperature_c"] = rng.uniform(-5, 30, len(ride))
    metric_column = {Metric.PM25: "pm25_ugm3", Metric.NO2: "no2_ugm3"}[metric]
    other_column = {Metric.HUMIDITY: "humidity_pct", Metric.TEMPERATURE: "temperature_c"}[other]
    rides[1][metric_column][::7] = np.nan  # some readings lack the metric ...
    rides[0][other_column][100:250] = np.nan  # ... or the covariate, for minutes
    rides[2][other_column] = np.nan  # a place without the covariate at all
    with psycopg.connect(any_backend_url, autocommit=True) as conn:
        for ride in rides:
            write_batch(conn, ride, AGGREGATE)
        for sel in (selection(metric), selection(metric, res=8, window_s=3600)):
            stats, covariate = cell_stats_with(conn, sel, other, UTRECHT)
            assert stats.tobytes() == cell_stats(conn, sel, UTRECHT).tobytes()
            alone = cell_stats(conn, dataclasses.replace(sel, metric=other), UTRECHT)
            alone = alone[np.isin(alone["cell"], stats["cell"])]
            assert len(alone) < len(stats)  # a cell without the covariate is left out
            assert covariate["cell"].tolist() == alone["cell"].tolist()
            assert covariate["n"].tolist() == alone["n"].tolist()
            # The same sums, maybe added in another order (the plans differ): to rounding.
            for name in ("mean", "std", "min", "max"):
                np.testing.assert_allclose(
                    covariate[name], alone[name], rtol=1e-12, equal_nan=True, err_msg=name
                )
            # Its histogram is not merged: an interval needs the mean and spread only.
            for name in ("p50", "p95", "p50_err", "p95_err"):
                assert np.isnan(covariate[name]).all(), name


def test_a_covariate_in_the_same_pass_needs_the_same_units(conn: psycopg.Connection[Any]) -> None:
    for sel, other in (
        (selection(min_rides=3), Metric.HUMIDITY),  # k: units differ by metric
        (selection(min_days=2), Metric.HUMIDITY),
        (selection(Metric.NOISE), Metric.HUMIDITY),  # no such pair
    ):
        assert not combines(sel, other)
        with pytest.raises(QueryError, match="covariate pairs, on raw values without k"):
            cell_stats_with(conn, sel, other, UTRECHT)
