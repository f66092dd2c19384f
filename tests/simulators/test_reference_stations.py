"""Reference stations and calibration campaigns (simulators.reference)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulators.environment import field_mean
from simulators.fleet import Fleet, SimulationConfig, stream
from simulators.reference import (
    DAY_MS,
    KIT_ERRORS_DTYPE,
    CampaignSpec,
    hourly_reference,
    place_stations,
    simulate_campaign,
    stations_array,
    true_kit_errors,
)
from simulators.sensors import KitCalibration, SensorSpec, measure
from stream.core.calibration import HOUR_MS, REFERENCE_DTYPE, STATION_DTYPE

CONFIG = SimulationConfig(n_bikes=3, duration_s=3600, seed=4, reading_interval_s=10.0)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(CONFIG)


def test_stations_stand_where_their_kind_says(fleet: Fleet) -> None:
    stations = place_stations(fleet.town, fleet.environment, n_traffic=1, n_background=3, seed=4)
    assert [s.kind for s in stations] == ["traffic", "background", "background", "background"]
    x, y = fleet.town.to_xy(
        np.array([s.lat_deg for s in stations]), np.array([s.lon_deg for s in stations])
    )
    d = fleet.environment.distance_to_arterial_m(x, y)
    assert d[0] < 5.0
    assert np.all(d[1:] >= 150.0)
    assert np.all(np.hypot(x[:, None] - x, y[:, None] - y)[np.triu_indices(4, 1)] >= 600.0)
    arr = stations_array(stations)
    assert arr.dtype == STATION_DTYPE
    assert place_stations(fleet.town, fleet.environment, seed=4) == stations


def test_a_station_reports_the_hourly_mean_of_the_truth_at_its_place(fleet: Fleet) -> None:
    stations = place_stations(fleet.town, fleet.environment, seed=4)
    start = CONFIG.start_ms
    ref = hourly_reference(fleet.environment, stations, start + 1, start + 2 * HOUR_MS)
    assert ref.dtype == REFERENCE_DTYPE
    assert len(ref) == len(stations) * 3 * 2  # three metrics, two clock hours touched
    assert np.all(ref["valid"])
    assert np.all(ref["hour_start_ms"] % HOUR_MS == 0)
    s = stations[1]
    hour = int(ref["hour_start_ms"].min())
    ts = hour + (np.arange(60) + 0.5) * 60_000
    want = field_mean(
        "no2_ugm3",
        fleet.environment.true_value("no2_ugm3", s.lat_deg, s.lon_deg, ts.astype(np.int64)),
    )
    got = ref[
        (ref["station_id"] == s.station_id)
        & (ref["metric"] == "no2_ugm3")
        & (ref["hour_start_ms"] == hour)
    ]["value"]
    assert got.tolist() == [pytest.approx(want, rel=1e-12)]


def test_a_kit_without_its_own_kappa_measures_as_before() -> None:
    """KitCalibration.humidity_kappa is None by default: every seed's readings stay as they were."""
    spec = SensorSpec()
    cal = KitCalibration.draw(spec, stream(1, 4, 0))
    assert cal.humidity_kappa is None
    n = 50
    rng = np.random.default_rng(0)
    truth = {
        name: rng.uniform(5, 30, n)
        for name in ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3", "no2_ugm3", "temperature_c")
    }
    truth["noise_laeq_db"] = rng.uniform(40, 70, n)
    truth["humidity_pct"] = rng.uniform(60, 96, n)
    kw = {
        "boot_elapsed_s": np.full(n, 600.0),
        "run_elapsed_s": np.arange(n, dtype=float),
        "speed_mps": np.full(n, 4.0),
    }
    a = measure(spec, cal, truth, rng=np.random.default_rng(5), **kw)
    b = measure(
        spec,
        replace(cal, humidity_kappa=spec.humidity_kappa),
        truth,
        rng=np.random.default_rng(5),
        **kw,
    )
    for name in a.values:
        assert np.array_equal(a.values[name], b.values[name])
    c = measure(spec, replace(cal, humidity_kappa=0.3), truth, rng=np.random.default_rng(5), **kw)
    humid = truth["humidity_pct"] > 80
    assert np.all(c.values["pm25_ugm3"][humid] > a.values["pm25_ugm3"][humid])


def test_a_campaign_keeps_each_kits_errors_while_it_rides_other_rounds() -> None:
    spec = CampaignSpec(days=3, kappa_spread=0.05)
    c = simulate_campaign(CONFIG, spec)
    again = simulate_campaign(CONFIG, spec)
    assert np.array_equal(c.readings, again.readings)
    assert np.array_equal(c.reference, again.reference)
    errors = c.kit_errors
    assert errors.dtype == KIT_ERRORS_DTYPE
    base = Fleet(CONFIG)
    assert errors["kit_id"].tolist() == [b.kit_id for b in base.bikes]
    assert errors["pm_gain"].tolist() == [b.calibration.pm_gain for b in base.bikes]
    assert len(set(errors["pm_kappa"].tolist())) == 3
    np.testing.assert_array_equal(
        true_kit_errors(base)[["pm_gain", "no2_offset_ugm3"]],
        errors[["pm_gain", "no2_offset_ugm3"]],
    )
    r = c.readings
    days = (r["true_ts_ms"] - CONFIG.start_ms) // DAY_MS
    assert sorted(set(days.tolist())) == [0, 1, 2]
    # the PM bias of each reading is the kit's own gain and offset, whatever round it rides
    for e in errors:
        mine = r[(r["kit_id"] == e["kit_id"]) & (r["true_humidity_pct"] < 75.0)]
        expected = mine["true_pm25_ugm3"] * (e["pm_gain"] - 1) + e["pm_offset_ugm3"]
        assert np.allclose(mine["bias_pm25_ugm3"], expected, atol=1e-3)
    # a kit rides another bike's round each day: its first position differs from day to day
    kit = int(errors["kit_id"][0])
    starts = {
        d: r[(r["kit_id"] == kit) & (days == d)][["true_lat_deg", "true_lon_deg"]][0].tolist()
        for d in (0, 1)
    }
    assert starts[0] != starts[1]
    hours = set((r["true_ts_ms"] // HOUR_MS * HOUR_MS).tolist())
    assert hours <= set(c.reference["hour_start_ms"].tolist())
    assert c.station_array.dtype == STATION_DTYPE
