"""The 95 % interval of the shown value, and numbers rounded to the sensor's resolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.aggregates import judge, tile_bands
from api.bands import load_bands
from api.stats import (
    INTRA_RIDE_CORRELATION,
    effective_n,
    finite_or_none,
    mean_interval,
    round_interval,
    rounded,
    t975,
)
from storage.merged_stats import STATS_DTYPE
from stream.core.partials import Metric


def _stats(**columns: list[float]) -> np.ndarray:
    size = len(next(iter(columns.values())))
    out = np.zeros(size, dtype=STATS_DTYPE)
    out["laeq_db"] = np.nan
    for name, values in columns.items():
        out[name] = values
    return out


def test_t_quantiles_match_the_tables() -> None:
    got = t975(np.array([1, 2, 10, 30, 31, 120, 10_000, 0]))
    assert got[:4].tolist() == [12.706, 4.303, 2.228, 2.042]
    assert got[4] == pytest.approx(2.040, abs=2e-3)
    assert got[5] == pytest.approx(1.980, abs=2e-3)
    assert got[6] == pytest.approx(1.960, abs=1e-3)
    assert np.isnan(got[7])


@given(n=st.integers(2, 5000), rides=st.integers(1, 200), rho=st.floats(0.0, 1.0))
def test_the_effective_sample_size_lies_between_rides_and_readings(
    n: int, rides: int, rho: float
) -> None:
    rides = min(rides, n)
    got = float(effective_n(np.array([n]), np.array([rides]), rho)[0])
    assert rides * (1 - 1e-9) <= got <= n * (1 + 1e-9)
    assert float(effective_n(np.array([n]), np.array([rides]), 1.0)[0]) == pytest.approx(rides)


def test_one_ride_has_no_interval_and_says_why() -> None:
    stats = _stats(n=[50, 50, 1], mean=[10.0, 10.0, 10.0], std=[2.0, 2.0, np.nan], rides=[1, 4, 1])
    iv = mean_interval(stats, Metric.PM25)
    assert np.isnan(iv.low[0])
    assert np.isnan(iv.high[0])
    assert iv.reason == ["single_ride", None, "single_ride"]
    assert iv.low[1] < 10.0 < iv.high[1]


def test_more_correlated_readings_give_wider_intervals_and_rides_narrow_them() -> None:
    stats = _stats(n=[200, 200, 2000], mean=[10.0] * 3, std=[3.0] * 3, rides=[4, 4, 40])
    loose = mean_interval(stats, Metric.PM25, rho=0.1)
    strict = mean_interval(stats, Metric.PM25, rho=1.0)
    assert strict.high[0] - strict.low[0] > loose.high[0] - loose.low[0]
    # rho = 1 is the rides-only interval on the log scale: exp(t·s/(x̄·√R)).
    assert strict.high[0] == pytest.approx(10.0 * np.exp(3.182 * 3.0 / (10.0 * 2.0)))
    assert loose.high[2] - loose.low[2] < loose.high[0] - loose.low[0]


@given(
    mean=st.floats(0.1, 500.0),
    cv=st.floats(0.01, 20.0),
    n=st.integers(2, 3000),
    rides=st.integers(2, 50),
    metric=st.sampled_from([Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2]),
)
def test_concentration_intervals_never_go_below_zero(
    mean: float, cv: float, n: int, rides: int, metric: Metric
) -> None:
    stats = _stats(n=[max(n, rides)], mean=[mean], std=[mean * cv], rides=[rides])
    iv = round_interval(mean_interval(stats, metric), metric)
    assert iv.reason == [None]
    assert 0.0 <= iv.low[0] <= mean <= iv.high[0]


def test_the_noise_interval_is_around_laeq_not_the_decibel_mean() -> None:
    # 60 and 80 dB for equal time: the dB mean is 70, LAeq 77.0 (docs/design.md decision 3).
    stats = _stats(
        n=[100], mean=[70.0], std=[10.05], rides=[10], laeq_db=[77.0], min=[60.0], max=[80.0]
    )
    iv = mean_interval(stats, Metric.NOISE)
    assert iv.low[0] < 77.0 < iv.high[0]
    assert iv.high[0] - 77.0 == pytest.approx(77.0 - iv.low[0])  # symmetric in dB
    assert iv.low[0] > 70.0


def test_the_design_effect_interval_covers_95_percent_when_rho_is_right() -> None:
    """Rides with a shared error (a kit's offset) and independent reading noise, with
    the intra-ride correlation the module assumes: about 95 % of intervals cover."""
    rng = np.random.default_rng(20261207)
    rho = INTRA_RIDE_CORRELATION[Metric.PM25]
    tau, sigma = np.sqrt(rho), np.sqrt(1.0 - rho)  # total variance 1, ICC rho
    trials, rides, per_ride = 4000, 6, 20
    offset = rng.normal(0.0, tau, (trials, rides, 1))
    values = 20.0 + offset + rng.normal(0.0, sigma, (trials, rides, per_ride))
    flat = values.reshape(trials, -1)
    stats = _stats(
        n=[rides * per_ride] * trials,
        mean=flat.mean(axis=1).tolist(),
        std=flat.std(axis=1, ddof=1).tolist(),
        rides=[rides] * trials,
    )
    iv = mean_interval(stats, Metric.PM25)
    covered = np.mean((iv.low <= 20.0) & (iv.high >= 20.0))
    assert 0.93 <= covered <= 0.97


def test_rounding_to_the_sensor_resolution_decides_the_band() -> None:
    # Readings of 0.1 µg/m³ whose exact mean is 5.0, summed in floating point.
    stats = _stats(
        n=[3, 3],
        mean=[4.999999999, 4.94],
        std=[0.1, 0.1],
        rides=[3, 3],
        max=[10.899999618530273, 5.0],
    )
    scale = load_bands("eaqi-2024").scale(Metric.PM25)
    shown = rounded(stats, Metric.PM25)
    assert shown["mean"].tolist() == [5.0, 4.9]
    assert shown["max"][0] == 10.9
    j = judge(stats, Metric.PM25, scale, min_readings=1)
    assert [scale.bands[b].label for b in j.band] == ["Fair", "Good"]
    cells = np.zeros(
        1, dtype=[("n", "<i8"), ("sum", "<f8"), ("energy", "<f8"), ("duration_s", "<f8")]
    )
    cells["n"], cells["sum"] = 3, 14.999999999
    assert scale.bands[int(tile_bands(cells, Metric.PM25, scale, 1)[0])].label == "Fair"


def test_percentile_error_bounds_still_hold_for_the_rounded_percentile() -> None:
    stats = _stats(
        n=[20, 20],
        mean=[5.0, 5.0],
        std=[1.0, 1.0],
        rides=[2, 2],
        p50=[4.96, 7.0],
        p50_err=[0.3, 0.0],
        p95=[9.0, 9.0],
        p95_err=[1.0, 0.0],
    )
    shown = rounded(stats, Metric.PM25)
    assert shown["p50"].tolist() == [5.0, 7.0]
    # 4.96 ± 0.3 is within [4.66, 5.26]: 5.0 ± 0.4 still contains it.
    assert shown["p50_err"].tolist() == pytest.approx([0.4, 0.1])
    assert shown["p95_err"].tolist() == pytest.approx([1.1, 0.1])


def test_bounds_are_rounded_outward() -> None:
    stats = _stats(n=[100], mean=[10.0], std=[3.0], rides=[5])
    raw = mean_interval(stats, Metric.NO2)
    iv = round_interval(raw, Metric.NO2)
    assert iv.low[0] <= raw.low[0]
    assert iv.high[0] >= raw.high[0]
    assert iv.low[0] * 10 == pytest.approx(round(iv.low[0] * 10))
    assert iv.high[0] - raw.high[0] < 0.1


def test_finite_or_none() -> None:
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(float("inf")) is None
    assert finite_or_none(1.5) == 1.5
