"""The 95 % interval of the shown value, and numbers rounded to the sensor's resolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.aggregates import judge, tile_bands
from api.bands import load_bands
from api.stats import (
    DECIMALS,
    SIMULATED_FLEET,
    ErrorModel,
    Intervals,
    KitErrors,
    finite_or_none,
    grid_mean,
    mean_interval,
    ride_share,
    round_interval,
    rounded,
    t975,
)
from simulators.sensors import HUMID_RH_PCT, SensorSpec, humidity_growth
from storage.merged_stats import STATS_DTYPE
from stream.core.partials import Metric


def _stats(**columns: list[float]) -> np.ndarray:
    size = len(next(iter(columns.values())))
    out = np.zeros(size, dtype=STATS_DTYPE)
    out["laeq_db"] = np.nan
    out["ride_weight"] = out["ride_weight_sq"] = out["correction_u"] = np.nan
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


@given(
    weights=st.lists(st.floats(0.001, 1e6, allow_nan=False), min_size=1, max_size=40),
)
def test_the_ride_share_lies_between_equal_rides_and_one_ride(weights: list[float]) -> None:
    w = np.array(weights)
    stats = _stats(n=[1000], rides=[len(w)], ride_weight=[w.sum()], ride_weight_sq=[(w**2).sum()])
    share = float(ride_share(stats)[0])
    assert 1 / len(w) * (1 - 1e-9) <= share <= 1 + 1e-12
    assert share == pytest.approx(min(max((w**2).sum() / w.sum() ** 2, 1 / len(w)), 1.0))
    equal = _stats(n=[1000], rides=[len(w)], ride_weight=[len(w)], ride_weight_sq=[len(w)])
    assert float(ride_share(equal)[0]) == pytest.approx(1 / len(w))
    unknown = _stats(n=[1000], rides=[len(w)], ride_weight=[np.nan], ride_weight_sq=[np.nan])
    assert float(ride_share(unknown)[0]) == 1.0


def test_one_ride_has_no_interval_and_says_why() -> None:
    stats = _stats(n=[50, 50, 1], mean=[10.0, 10.0, 10.0], std=[2.0, 2.0, np.nan], rides=[1, 4, 1])
    iv = mean_interval(stats, Metric.PM25)
    assert np.isnan(iv.low[0])
    assert np.isnan(iv.high[0])
    assert iv.reason == ["single_ride", None, "single_ride"]
    assert iv.low[1] < 10.0 < iv.high[1]


def test_a_ride_that_weighs_more_widens_the_interval_and_more_rides_narrow_it() -> None:
    # 4 rides of 50 readings each, 4 rides of which one gave 185 of 200, and 40 rides.
    stats = _stats(
        n=[200, 200, 2000],
        mean=[10.0] * 3,
        std=[3.0] * 3,
        rides=[4, 4, 40],
        ride_weight=[200, 200, 2000],
        ride_weight_sq=[4 * 50**2, 185**2 + 3 * 5**2, 40 * 50**2],
    )
    iv = mean_interval(stats, Metric.PM25)
    width = iv.high - iv.low
    assert width[1] > 1.5 * width[0]
    assert width[2] < width[0] / 2


def test_the_spread_of_the_air_is_no_error_of_the_mean() -> None:
    # The readings of a large cell spread because the air differs from street to street;
    # the mean of those readings is no less certain for it (what made noise at
    # resolution 8 cover 100 %: its intervals grew with the spread).
    stats = _stats(
        n=[400, 400], mean=[10.0, 10.0], std=[0.5, 8.0], rides=[5, 5], min=[8, 1], max=[12, 60]
    )
    iv = mean_interval(stats, Metric.PM25)
    assert iv.high[0] - iv.low[0] == pytest.approx(iv.high[1] - iv.low[1])


@given(
    mean=st.floats(0.0, 500.0),
    cv=st.floats(0.01, 20.0),
    n=st.integers(2, 3000),
    rides=st.integers(2, 50),
    metric=st.sampled_from([Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2]),
    covariate=st.floats(-20.0, 99.0),
)
def test_concentration_intervals_never_go_below_zero(
    mean: float, cv: float, n: int, rides: int, metric: Metric, covariate: float
) -> None:
    stats = _stats(n=[max(n, rides)], mean=[mean], std=[mean * cv], rides=[rides])
    other = _stats(n=[max(n, rides)], mean=[covariate], std=[2.0], rides=[rides])
    iv = round_interval(mean_interval(stats, metric, covariate=other), metric)
    assert iv.reason == [None]
    assert 0.0 <= iv.low[0] <= iv.high[0]
    assert iv.high[0] > 0


def test_the_noise_interval_is_around_laeq_less_what_wind_and_averaging_add() -> None:
    # 60 and 80 dB for equal time: the dB mean is 70, LAeq 77.0 (docs/design.md decision 3).
    stats = _stats(
        n=[100, 100],
        mean=[70.0, 45.0],
        std=[10.05, 1.0],
        rides=[10, 10],
        laeq_db=[77.0, 45.0],
        min=[60.0, 43.0],
        max=[80.0, 47.0],
    )
    iv = mean_interval(stats, Metric.NOISE)
    centre = (iv.low + iv.high) / 2
    jensen = np.log(10) / 10 * SIMULATED_FLEET.kits[Metric.NOISE].reading_sd ** 2 / 2
    # At 77 dB the wind (40 dB(A) of energy) adds nothing to speak of ...
    assert centre[0] == pytest.approx(77.0 - jensen, abs=0.01)
    assert iv.low[0] > 70.0
    # ... on a quiet street it adds 10·log10(1 + 10^((40 − 45)/10)) = 1.2 dB.
    wind = 10 * np.log10(1 + 10 ** ((40.0 - 45.0) / 10))
    assert centre[1] == pytest.approx(45.0 - jensen - wind, abs=0.01)


def test_pm_in_humid_air_has_its_interval_below_the_over_reading_mean() -> None:
    # Optical PM reads 1 + κ·h(RH) times the truth above 75 % RH: at a steady 85 %,
    # κ = 0.1, h = 0.85/0.15 − 0.75/0.25 = 2.67, so 1.267 times.
    stats = _stats(n=[300, 300], mean=[12.67, 12.67], std=[2.0, 2.0], rides=[6, 6])
    humidity = _stats(n=[300, 300], mean=[85.0, 60.0], std=[0.0, 0.0], rides=[6, 6])
    iv = mean_interval(stats, Metric.PM25, covariate=humidity)
    growth = 1 + 0.1 * (0.85 / 0.15 - 3.0)
    humid_centre = (iv.low[0] + iv.high[0]) / 2
    assert humid_centre == pytest.approx(12.67 / growth, rel=1e-6)
    assert iv.high[0] < 12.67  # the truth is below what the kits read
    assert (iv.low[1] + iv.high[1]) / 2 == pytest.approx(12.67)  # dry air: no correction
    # The humidity sensors' own errors make the correction uncertain: wider than dry.
    assert iv.high[0] - iv.low[0] > (iv.high[1] - iv.low[1]) / growth
    unknown = mean_interval(stats, Metric.PM25)
    assert (unknown.low[0] + unknown.high[0]) / 2 == pytest.approx(12.67)


def test_pm_near_fog_is_corrected_for_the_readings_below_fog_only() -> None:
    # PM leaves out readings at 95 % RH and above (QaFlag.FOG_PM); the growth to take out
    # is that of the readings kept, the normal of the cell's humidity cut at 95 %, not
    # the whole normal with its fog part counted at 95 %.
    stats = _stats(n=[300], mean=[20.0], std=[2.0], rides=[6])
    humidity = _stats(n=[400], mean=[93.0], std=[3.0], rides=[6])
    iv = mean_interval(stats, Metric.PM25, covariate=humidity)
    rh = np.random.default_rng(5).normal(93.0, 3.0, 400_000)
    kept = rh[rh < 95.0]
    growth = float(np.mean(humidity_growth(kept, SIMULATED_FLEET.pm_humidity_kappa)))
    assert (iv.low[0] + iv.high[0]) / 2 == pytest.approx(20.0 / growth, rel=0.002)
    whole = float(np.mean(humidity_growth(np.minimum(rh, 95.0), 0.1)))
    assert 20.0 / whole < 20.0 / growth * 0.97  # what counting fog at 95 % gave


def test_no2_in_the_cold_has_its_interval_above_the_mean() -> None:
    # The cells read 0.4 µg/m³ per °C low below 20 °C: at 10 °C, 4 µg/m³ (none of the
    # readings clipped at zero: the least is 6).
    stats = _stats(n=[300], mean=[20.0], std=[5.0], min=[6.0], rides=[6])
    temperature = _stats(n=[300], mean=[10.0], std=[1.0], rides=[6])
    iv = mean_interval(stats, Metric.NO2, covariate=temperature)
    assert (iv.low[0] + iv.high[0]) / 2 == pytest.approx(24.0)


def _fleet_cell_hours(
    rng: np.random.Generator, trials: int, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """Cell-hours seen by 2–7 rides of unequal length, each of a kit drawn with the
    model's errors, in air that varies along the street (10 µg/m³ or 8 dB from reading
    to reading): the statistics the API reads, and the true mean of the same readings."""
    kit = SIMULATED_FLEET.kits[metric]
    rows, truths = [], []
    for _ in range(trials):
        rides = int(rng.integers(2, 8))
        sizes = rng.integers(3, 120, rides)
        base = rng.uniform(50, 70) if metric is Metric.NOISE else rng.uniform(5, 30)
        true = [base + rng.normal(0, 8.0 if metric is Metric.NOISE else 10.0, m) for m in sizes]
        if metric is not Metric.NOISE:
            true = [np.abs(t) for t in true]
        values = []
        for t in true:
            offset, gain = rng.normal(0, kit.kit_sd), rng.normal(0, kit.kit_gain_sd)
            noise = rng.normal(0, 1, len(t)) * (kit.reading_sd + kit.reading_rel_sd * t)
            values.append(t * (1 + gain) + offset + noise)
        v, t = np.concatenate(values), np.concatenate(true)
        row = {
            "n": len(v),
            "mean": v.mean(),
            "std": v.std(ddof=1),
            "min": v.min(),
            "max": v.max(),
            "rides": rides,
            "ride_weight": float(sizes.sum()),
            "ride_weight_sq": float((sizes.astype(float) ** 2).sum()),
        }
        if metric is Metric.NOISE:
            energy = [10 ** (x / 10) for x in values]
            e = np.array([x.sum() for x in energy])
            row |= {"laeq_db": 10 * np.log10(e.sum() / len(v))}
            row |= {"ride_weight": e.sum(), "ride_weight_sq": (e**2).sum()}
            truths.append(10 * np.log10(np.mean(10 ** (t / 10))))
        else:
            truths.append(t.mean())
        rows.append(row)
    stats = _stats(**{k: [r.get(k, np.nan) for r in rows] for k in rows[0]})
    return stats, np.array(truths)


@pytest.mark.parametrize("metric", [Metric.PM25, Metric.NO2])
def test_intervals_cover_95_percent_of_true_means_when_the_model_is_right(metric: Metric) -> None:
    """The kits' errors as the model says, air that varies, rides of unequal length:
    about 95 % of intervals hold the true mean of their readings. The spread of the
    air made the intervals of before (a design effect on the readings' spread) cover
    nearly all of them."""
    stats, truth = _fleet_cell_hours(np.random.default_rng(20261207), 3000, metric)
    temperature = _stats(n=[1] * len(stats), mean=[20.0] * len(stats), std=[0.0] * len(stats))
    iv = mean_interval(stats, metric, covariate=temperature)
    covered = np.mean((iv.low <= truth) & (truth <= iv.high))
    assert 0.935 <= covered <= 0.965


def _low_no2_cell_hours(
    rng: np.random.Generator, trials: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell-hours of NO2 where there is little of it (2–12 µg/m³, varying by 4 from
    reading to reading), seen by 2–7 rides of kits with the model's errors, each reading
    clipped at zero as the firmware does (simulators.sensors.measure): the statistics
    the API reads, the true mean of the same readings, and the share of readings
    clipped."""
    kit = SIMULATED_FLEET.kits[Metric.NO2]
    rows, truths, clipped = [], [], []
    for _ in range(trials):
        rides = int(rng.integers(2, 8))
        sizes = rng.integers(3, 120, rides)
        base = rng.uniform(2, 12)
        true = [np.abs(base + rng.normal(0, 4.0, m)) for m in sizes]
        values = []
        for t in true:
            offset, gain = rng.normal(0, kit.kit_sd), rng.normal(0, kit.kit_gain_sd)
            noise = rng.normal(0, kit.reading_sd, len(t))
            values.append(np.maximum(t * (1 + gain) + offset + noise, 0.0))
        v, t = np.concatenate(values), np.concatenate(true)
        rows.append(
            {
                "n": len(v),
                "mean": v.mean(),
                "std": v.std(ddof=1),
                "min": v.min(),
                "max": v.max(),
                "rides": rides,
                "ride_weight": float(sizes.sum()),
                "ride_weight_sq": float((sizes.astype(float) ** 2).sum()),
            }
        )
        truths.append(t.mean())
        clipped.append(np.mean(v == 0))
    stats = _stats(**{k: [r[k] for r in rows] for k in rows[0]})
    return stats, np.array(truths), np.array(clipped)


def test_no2_intervals_where_readings_are_clipped_at_zero_cover_95_percent() -> None:
    """A kit that reads low has its lowest readings raised to zero, which takes back
    part of its error: the mean of clipped readings moves with a kit's error by the
    share of readings a kit without error keeps above zero (the GUM's sensitivity
    coefficient at the estimates). Counted at full size, the kits' errors made these
    intervals cover 96.9 % (97.2 % with two other seeds); now 96.1 % (96.3–96.4 %)."""
    stats, truth, clipped = _low_no2_cell_hours(np.random.default_rng(20261209), 3000)
    assert 0.1 < clipped.mean() < 0.4  # the clip matters here
    temperature = _stats(n=[1] * len(stats), mean=[20.0] * len(stats), std=[0.0] * len(stats))
    iv = mean_interval(stats, Metric.NO2, covariate=temperature)
    covered = np.mean((iv.low <= truth) & (truth <= iv.high))
    assert 0.935 <= covered <= 0.965


def _humid_pm_cell_hours(rng: np.random.Generator, trials: int) -> tuple[np.ndarray, ...]:
    """Cell-hours of PM2.5 in humid air, as simulators.sensors measures it: 2-7 rides of
    unequal length, each of a kit with its own PM offset and gain and its own humidity
    sensor offset; the air's humidity varies around 80-94 % and the PM sensor grows
    with the true humidity; readings whose measured humidity is at fog level are left
    out of PM (not of the humidity). The PM and humidity statistics the API reads, and
    the true mean of the PM readings kept."""
    kit = SIMULATED_FLEET.kits[Metric.PM25]
    rh_kit = SIMULATED_FLEET.kits[Metric.HUMIDITY]
    kappa = SIMULATED_FLEET.pm_humidity_kappa
    pm, hum, truths = [], [], []
    for _ in range(trials):
        rides = int(rng.integers(2, 8))
        sizes = rng.integers(3, 120, rides)
        base, base_rh = rng.uniform(5, 30), rng.uniform(80, 94)
        values, rh_read, true_kept = [], [], []
        for m in sizes:
            t = np.abs(base + rng.normal(0, 10.0, m))
            rh = np.minimum(base_rh + rng.normal(0, 3.0, m), 99.0)
            offset, gain = rng.normal(0, kit.kit_sd), rng.normal(0, kit.kit_gain_sd)
            expected = t * (1 + gain) * humidity_growth(rh, kappa) + offset
            v = expected + rng.normal(0, 1, m) * (kit.reading_sd + kit.reading_rel_sd * expected)
            measured = rh + rng.normal(0, rh_kit.kit_sd) + rng.normal(0, rh_kit.reading_sd, m)
            kept = measured < SIMULATED_FLEET.fog_pct
            values.append(v[kept])
            true_kept.append(t[kept])
            rh_read.append(measured)
        v, t, h = np.concatenate(values), np.concatenate(true_kept), np.concatenate(rh_read)
        if len(v) < 2:
            continue
        weights = {
            "rides": rides,
            "ride_weight": float(sizes.sum()),
            "ride_weight_sq": float((sizes.astype(float) ** 2).sum()),
        }
        pm.append({"n": len(v), "mean": v.mean(), "std": v.std(ddof=1), "min": v.min()} | weights)
        hum.append({"n": len(h), "mean": h.mean(), "std": h.std(ddof=1)} | weights)
        truths.append(t.mean())
    return (
        _stats(**{k: [r[k] for r in pm] for k in pm[0]}),
        _stats(**{k: [r[k] for r in hum] for k in hum[0]}),
        np.array(truths),
    )


def test_pm_intervals_in_humid_air_cover_95_percent() -> None:
    """The humidity correction's uncertainty is a kit error (each humidity sensor's
    offset, shared by a ride), and dividing the mean by 1 + κh divides every error
    the kits added with it (the GUM's sensitivity coefficients): taken at full size
    they made humid PM intervals cover 98 %."""
    stats, humidity, truth = _humid_pm_cell_hours(np.random.default_rng(20261208), 3000)
    iv = mean_interval(stats, Metric.PM25, covariate=humidity)
    covered = np.mean((iv.low <= truth) & (truth <= iv.high))
    assert 0.935 <= covered <= 0.965


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


def test_a_mean_halfway_between_two_steps_is_shown_the_same_whatever_the_sums_order() -> None:
    # Readings whose exact mean is 12.45 µg/m³, halfway between two steps: their float
    # sums, added in other orders (as other batchings and plans merge them), land on
    # either side of it; the mean shown (and its band) must not follow them.
    for readings in ([12.4, 12.5], [12.4, 12.5, 12.3, 12.6, 12.2, 12.7]):
        n = len(readings)
        rng = np.random.default_rng(n)
        sums = {float(np.cumsum(rng.permutation(readings))[-1]) for _ in range(50)}
        sums |= {np.nextafter(sum(readings), 0.0), np.nextafter(sum(readings), 100.0)}
        assert len({round(total / n, 1) for total in sums}) == 2  # the float mean flips
        for total in sums:
            stats = _stats(n=[n], mean=[total / n], std=[0.1], rides=[2], max=[12.7])
            assert rounded(stats, Metric.PM25)["mean"].tolist() == [12.5], total
            assert grid_mean(np.array([total]), np.array([n]), 1).tolist() == [12.5], total
    # Off the grid (a corrected mean): rounded as a float, as before.
    corrected = _stats(n=[3], mean=[12.4449], std=[0.1], rides=[2], correction_u=[0.3])
    assert rounded(corrected, Metric.PM25)["mean"].tolist() == [12.4]
    assert grid_mean(np.array([37.3347]), np.array([3]), 1).tolist() == [12.4]
    # Negative temperatures round half away from zero; empty selections stay NaN.
    assert grid_mean(np.array([-0.25, 0.25, 0.0]), np.array([2, 2, 0]), 2).tolist()[:2] == [
        -0.13,
        0.13,
    ]
    assert np.isnan(grid_mean(np.array([0.0]), np.array([0]), 1)[0])


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


@given(
    low=st.floats(-50.0, 500.0),
    width=st.floats(0.0, 50.0),
    metric=st.sampled_from([Metric.PM25, Metric.NO2, Metric.NOISE, Metric.TEMPERATURE]),
)
def test_bounds_are_rounded_to_the_nearest_step_as_the_mean_is(
    low: float, width: float, metric: Metric
) -> None:
    # Outward rounding widened every interval by a step on average (96-98 % of PM means
    # covered); to the nearest step each bound moves by half a step at most, either way.
    if metric is not Metric.NOISE:
        low = abs(low)  # mean_interval clips a concentration's lower bound at 0
    raw = Intervals(low=np.array([low]), high=np.array([low + width]), reason=[None])
    iv = round_interval(raw, metric)
    step = 10.0 ** -DECIMALS[metric]
    for got, was in ((iv.low[0], raw.low[0]), (iv.high[0], raw.high[0])):
        assert got == pytest.approx(round(got / step) * step)
        assert abs(got - was) <= step / 2 + 1e-9
    assert iv.low[0] <= iv.high[0]
    if metric is not Metric.NOISE:
        assert iv.low[0] >= 0.0


def test_finite_or_none() -> None:
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(float("inf")) is None
    assert finite_or_none(1.5) == 1.5


def test_the_default_error_model_is_the_simulated_fleets() -> None:
    # The API's defaults describe simulators.sensors.SensorSpec's kits; change both or neither.
    spec = SensorSpec()
    kits = SIMULATED_FLEET.kits
    for metric in (Metric.PM1, Metric.PM25, Metric.PM10):
        assert kits[metric].kit_sd == spec.pm_offset_spread_ugm3
        assert kits[metric].kit_gain_sd == spec.pm_gain_spread
        assert kits[metric].reading_sd == spec.pm_noise_ugm3
        assert kits[metric].reading_rel_sd == spec.pm_noise_relative
    drift = spec.no2_drift_spread_ugm3_per_day**2 * 60.0**2 / 3  # cells 0–60 days old
    assert kits[Metric.NO2].kit_sd == pytest.approx(np.sqrt(spec.no2_offset_spread_ugm3**2 + drift))
    assert kits[Metric.NO2].kit_gain_sd == spec.no2_gain_spread
    assert kits[Metric.NO2].reading_sd == spec.no2_noise_ugm3
    assert SIMULATED_FLEET.no2_temp_coeff == spec.no2_temperature_coeff_ugm3_per_c
    assert SIMULATED_FLEET.no2_temp_coeff_sd == spec.no2_temperature_coeff_ugm3_per_c / 2
    assert kits[Metric.NOISE].kit_sd == spec.noise_offset_spread_db
    assert kits[Metric.NOISE].reading_sd == spec.noise_random_db
    assert kits[Metric.TEMPERATURE].kit_sd == spec.temperature_offset_spread_c
    assert kits[Metric.HUMIDITY].kit_sd == spec.humidity_offset_spread_pct
    assert SIMULATED_FLEET.pm_humidity_kappa == spec.humidity_kappa
    assert SIMULATED_FLEET.humid_pct == HUMID_RH_PCT
    # 45 dB(A) at 5 m/s, at the fleet's quadratic mean speed of about 2.85 m/s.
    assert SIMULATED_FLEET.noise_wind_db == pytest.approx(
        spec.wind_noise_db_at_5mps + 20 * np.log10(2.85 / 5), abs=0.5
    )


def test_an_error_model_needs_every_metric_and_sane_numbers() -> None:
    with pytest.raises(ValueError, match="missing: no2"):
        ErrorModel(kits={m: k for m, k in SIMULATED_FLEET.kits.items() if m is not Metric.NO2})
    with pytest.raises(ValueError, match="kit_sd must be"):
        KitErrors(kit_sd=-1.0, reading_sd=1.0)
