"""The truth fields and the sensor models on top of them."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.environment import Environment, EnvironmentSpec, field_mean
from simulators.exceptions import SimulatorConfigError
from simulators.fleet import DEFAULT_START_MS
from simulators.sensors import (
    HUMID_RH_PCT,
    KitCalibration,
    SensorSpec,
    gnss,
    humidity_growth,
    measure,
)
from simulators.town import TownSpec, generate_town
from simulators.truthflags import TruthFlag

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def env() -> Environment:
    town = generate_town(TownSpec(), np.random.default_rng(0))
    return Environment(town, EnvironmentSpec(), np.random.default_rng(1))


def _on_and_off_arterial(env: Environment) -> tuple[np.ndarray, np.ndarray]:
    """Points on an arterial road and points in the middle of residential blocks."""
    seg = env.town.arterial_segments()
    on = (seg[:, :2] + seg[:, 2:]) / 2
    grid = np.stack(np.meshgrid(np.linspace(-1500, 1500, 40), np.linspace(-1500, 1500, 40)), -1)
    grid = grid.reshape(-1, 2)
    d = env.distance_to_arterial_m(grid[:, 0], grid[:, 1])
    return on, grid[d > 250]


def test_busy_roads_are_dirtier_and_louder(env: Environment) -> None:
    on, off = _on_and_off_arterial(env)
    at = DEFAULT_START_MS - HOUR_MS  # 08:00, morning rush
    f_on = env.fields_xy(on[:, 0], on[:, 1], np.full(len(on), at))
    f_off = env.fields_xy(off[:, 0], off[:, 1], np.full(len(off), at))
    assert np.mean(f_on["no2_ugm3"]) > np.mean(f_off["no2_ugm3"]) + 15
    assert np.mean(f_on["pm25_ugm3"]) > np.mean(f_off["pm25_ugm3"]) + 2
    assert np.mean(f_on["noise_laeq_db"]) > np.mean(f_off["noise_laeq_db"]) + 8
    for f in (f_on, f_off):
        assert np.all(f["pm1_ugm3"] <= f["pm25_ugm3"])
        assert np.all(f["pm25_ugm3"] <= f["pm10_ugm3"])


def test_daily_cycle_rush_hours_and_quiet_nights(env: Environment) -> None:
    on, _ = _on_and_off_arterial(env)
    midnight = DEFAULT_START_MS - 9 * HOUR_MS

    def at(hour: float) -> dict[str, np.ndarray]:
        ts = np.full(len(on), midnight + int(hour * HOUR_MS))
        return env.fields_xy(on[:, 0], on[:, 1], ts)

    night, rush, midday = at(3.0), at(8.0), at(13.0)
    assert np.mean(rush["no2_ugm3"]) > np.mean(midday["no2_ugm3"]) > np.mean(night["no2_ugm3"])
    assert np.mean(midday["noise_laeq_db"]) > np.mean(night["noise_laeq_db"]) + 3
    assert env.local_hour(np.array([DEFAULT_START_MS]))[0] == pytest.approx(9.0)


def test_weather_has_humid_episodes_and_fog(env: Environment) -> None:
    ts = DEFAULT_START_MS + np.arange(0, 30 * 24) * HOUR_MS  # a month, hourly
    rh = env.humidity_pct(ts)
    assert rh.min() >= 20
    assert rh.max() <= 100
    assert 0.1 < np.mean(rh > HUMID_RH_PCT) < 0.9
    assert np.any(rh >= 97.0)  # fog, some mornings
    mix = env.mixing_factor(ts)
    assert mix.min() > 0.4
    assert mix.max() < 3.0


def test_true_value_rejects_unknown_fields(env: Environment) -> None:
    with pytest.raises(SimulatorConfigError, match="pm3"):
        env.true_value("pm3", 52.1, 4.6, DEFAULT_START_MS)
    assert field_mean("noise_laeq_db", np.array([60.0, 80.0])) == pytest.approx(77.0, abs=0.05)


def test_humidity_growth_only_above_75_percent() -> None:
    g = humidity_growth(np.array([40.0, 75.0, 85.0, 95.0, 100.0]), 0.1)
    assert g[0] == g[1] == 1.0
    assert 1.1 < g[2] < g[3] < g[4] < 5.0


def test_sensor_errors_match_what_the_model_states() -> None:
    rng = np.random.default_rng(5)
    spec = SensorSpec()
    cal = KitCalibration.draw(spec, rng)
    n = 20_000
    truth = {
        "pm1_ugm3": np.full(n, 6.0),
        "pm25_ugm3": np.full(n, 10.0),
        "pm10_ugm3": np.full(n, 18.0),
        "no2_ugm3": np.full(n, 25.0),
        "noise_laeq_db": np.full(n, 60.0),
        "temperature_c": np.full(n, 15.0),
        "humidity_pct": np.where(np.arange(n) < n // 2, 60.0, 92.0),
    }
    m = measure(
        spec,
        cal,
        truth,
        boot_elapsed_s=np.full(n, 600.0),
        run_elapsed_s=np.zeros(n),
        speed_mps=np.full(n, 4.0),
        rng=rng,
    )
    for name in ("pm25_ugm3", "no2_ugm3", "noise_laeq_db"):
        error = m.values[name] - truth[name]
        assert abs(np.mean(error - m.bias[name])) < 5 * np.mean(m.sigma[name]) / np.sqrt(n) + 0.05
        assert np.std(error - m.bias[name]) == pytest.approx(np.mean(m.sigma[name]), rel=0.1)
    humid = (m.flags & TruthFlag.HUMID) != 0
    assert humid.sum() == n // 2
    # Optical PM reads high in humid air.
    assert np.mean(m.values["pm25_ugm3"][humid]) > 1.3 * np.mean(m.values["pm25_ugm3"][~humid])
    assert np.all(m.values["no2_ugm3"] >= 0)
    assert not np.any(m.status & 1)  # warm


def test_warm_up_after_power_on() -> None:
    rng = np.random.default_rng(6)
    spec = SensorSpec()
    cal = KitCalibration.draw(spec, rng)
    elapsed = np.arange(0.0, 600.0, 5.0)
    n = len(elapsed)
    truth = {
        name: np.full(n, v)
        for name, v in (
            ("pm1_ugm3", 6.0),
            ("pm25_ugm3", 10.0),
            ("pm10_ugm3", 18.0),
            ("no2_ugm3", 25.0),
            ("noise_laeq_db", 60.0),
            ("temperature_c", 20.0),
            ("humidity_pct", 50.0),
        )
    }
    m = measure(
        spec,
        cal,
        truth,
        boot_elapsed_s=elapsed,
        run_elapsed_s=elapsed,
        speed_mps=np.zeros(n),
        rng=rng,
    )
    warming = elapsed < spec.warmup_s
    assert np.array_equal((m.status & 1) != 0, warming)
    assert np.array_equal((m.flags & TruthFlag.WARMING_UP) != 0, warming)
    # The NO2 cell starts high and settles.
    assert np.mean(m.bias["no2_ugm3"][:3]) > np.mean(m.bias["no2_ugm3"][-20:]) + 15


def test_gnss_jumps_and_errors() -> None:
    rng = np.random.default_rng(7)
    spec = SensorSpec()
    n = 50_000
    x = np.full(n, 1500.0)  # outside the urban canyon
    fix = gnss(spec, x, np.zeros(n), np.full(n, 4.0), rng)
    jumped = (fix.flags & TruthFlag.GPS_JUMP) != 0
    starts = np.sum(np.diff(jumped.astype(int)) == 1)
    assert starts == pytest.approx(n * spec.gnss_jump_rate, rel=0.3)
    error = np.hypot(fix.x_m - x, fix.y_m)
    assert np.median(error[~jumped]) < 5.0
    assert error[jumped].min() >= spec.gnss_jump_m[0] - 20
    canyon = gnss(spec, np.zeros(n), np.zeros(n), np.full(n, 4.0), rng)
    assert np.mean(canyon.hdop) > 1.5 * np.mean(fix.hdop)
    assert np.mean((canyon.flags & TruthFlag.GPS_JUMP) != 0) > 3 * np.mean(jumped)
