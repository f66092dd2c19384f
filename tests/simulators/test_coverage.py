"""The API's 95 % intervals against the simulator's truth (simulators/coverage.py, api/stats.py).

bench/bench_coverage.py measures coverage over twelve fleets; this is one fleet of
them, seeded, whose kits drew errors close to the simulator's spec (checked below, so
that a change of the simulator's draws says why the band moved): a fleet like that
must see about 95 % of its intervals hold the truth, at a fine and a coarse
resolution. The interval of before (a design effect on the readings' spread) held
every noise mean at resolution 8 with intervals three times as wide as now. And one
fleet in humid air all the time, whose PM intervals the humidity correction's
uncertainty had made too wide.
"""

from __future__ import annotations

import numpy as np
import pytest

from api.stats import SIMULATED_FLEET, mean_interval, ride_share, round_interval
from simulators.coverage import SimulatedFleet, cell_hours, cells_by_resolution, simulate
from stream.core.partials import Metric

SEED = 47  # bench/results/coverage.json: its kits' errors within 10 % of the spec
HUMID_SEED = 17  # bench/results/coverage.json: every reading above 75 % RH, 10 °C


@pytest.fixture(scope="module")
def fleet() -> SimulatedFleet:
    return simulate(30, 5.0, SEED, 2.0)


@pytest.fixture(scope="module")
def humid_fleet() -> SimulatedFleet:
    return simulate(30, 5.0, HUMID_SEED, 2.0)


def _rms(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def test_the_fleets_kits_drew_errors_near_the_spec(fleet: SimulatedFleet) -> None:
    cals = list(fleet.calibrations.values())
    kits = SIMULATED_FLEET.kits
    pm = _rms([c.pm_offset_ugm3 for c in cals])
    noise = _rms([c.noise_offset_db for c in cals])
    no2 = _rms([c.no2_offset_ugm3 + c.no2_drift_ugm3_per_day * c.deployed_days for c in cals])
    assert pm == pytest.approx(kits[Metric.PM25].kit_sd, rel=0.15)
    assert noise == pytest.approx(kits[Metric.NOISE].kit_sd, rel=0.15)
    assert no2 == pytest.approx(kits[Metric.NO2].kit_sd, rel=0.15)
    assert np.mean(fleet.readings["humidity_pct"] > 75.0) < 0.1  # mostly dry air


@pytest.mark.parametrize("resolution", [8, 10])
@pytest.mark.parametrize("metric", [Metric.PM25, Metric.NO2, Metric.NOISE])
def test_about_95_percent_of_intervals_hold_the_true_mean(
    fleet: SimulatedFleet, metric: Metric, resolution: int
) -> None:
    cells = cells_by_resolution(fleet.readings, (resolution,))
    ch = cell_hours(fleet.readings, cells[resolution], fleet.rides, metric)
    iv = mean_interval(ch.stats, metric, covariate=ch.covariate)
    has = np.isfinite(iv.low)
    assert has.sum() >= 100
    covered = (iv.low <= ch.truth) & (ch.truth <= iv.high)
    coverage = float(covered[has].mean())
    # One fleet's coverage moves with the kits it drew and its weather (the fleets'
    # spread in bench/results/coverage.md is 2-3 points), beyond the binomial error.
    assert 0.90 <= coverage <= 0.985, coverage
    if metric is Metric.NOISE and resolution == 8:
        # Before: 100 %, with a median half-width of 2.9 dB, though LAeq was 0.5 dB off.
        assert np.median((iv.high - iv.low)[has]) / 2 < 1.5


def test_cell_hours_carry_the_rides_weights_and_the_covariate(fleet: SimulatedFleet) -> None:
    cells = cells_by_resolution(fleet.readings, (9,))
    for metric in (Metric.PM25, Metric.NOISE):
        ch = cell_hours(fleet.readings, cells[9], fleet.rides, metric)
        stats = ch.stats
        assert (stats["rides"] >= 1).all()
        share = ride_share(stats)
        assert ((share >= 1 / stats["rides"] - 1e-12) & (share <= 1)).all()
        assert (stats["ride_weight_sq"] <= stats["ride_weight"] ** 2 * (1 + 1e-12)).all()
        if metric is Metric.PM25:
            # A ride's weight is all its readings there, those without PM2.5 too.
            assert (stats["ride_weight"] >= stats["n"]).all()
            assert ch.covariate is not None
            found = np.isfinite(ch.covariate["mean"])
            assert found.mean() > 0.99
            assert (ch.covariate["cell"][found] == stats["cell"][found]).all()
            assert (ch.covariate["window_start_ms"][found] == stats["window_start_ms"][found]).all()
        else:
            assert ch.covariate is None
            energy = stats["ride_weight"] / stats["duration_s"]
            np.testing.assert_allclose(10 * np.log10(energy), stats["laeq_db"], atol=1e-9)


def test_pm_intervals_in_humid_air_are_not_too_wide(humid_fleet: SimulatedFleet) -> None:
    assert np.mean(humid_fleet.readings["humidity_pct"] > 75.0) > 0.99
    cells = cells_by_resolution(humid_fleet.readings, (10,))
    ch = cell_hours(humid_fleet.readings, cells[10], humid_fleet.rides, Metric.PM25)
    raw = mean_interval(ch.stats, Metric.PM25, covariate=ch.covariate)
    iv = round_interval(raw, Metric.PM25)  # as the API shows it
    has = np.isfinite(iv.low)
    assert has.sum() >= 1000
    coverage = float(((iv.low <= ch.truth) & (ch.truth <= iv.high))[has].mean())
    # Before: 98.3 %, the humidity sensors' error counted in full on the cell's mean
    # (not divided by 1 + κh as the mean is) and bounds rounded outward.
    assert 0.93 <= coverage <= 0.975, coverage
    # The errors measured against the stated u: the mean of z² was 0.62 before. This
    # fleet's PM gains spread 0.071 against the model's 0.08, so below 1 here.
    clear = has & (raw.low > 0)
    u = (raw.high - raw.low)[clear] / (2 * 1.959964)
    z = ((raw.high + raw.low)[clear] / 2 - ch.truth[clear]) / u
    assert 0.75 <= float(np.mean(z**2)) <= 1.1
