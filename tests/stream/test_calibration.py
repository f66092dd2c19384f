"""Co-location and per-kit correction (stream.core.calibration, calibration_fit,
calibration_corrections).

Proved on the simulator's ground truth: a campaign of daily runs of a fleet whose
kits have known errors, measured against reference stations (simulators.reference).
Every time is the campaign's own simulated start: nothing reads the calendar.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.fleet import SimulationConfig
from simulators.reference import (
    DAY_MS,
    Campaign,
    CampaignSpec,
    cell_hour_rmse,
    kit_error_z,
    simulate_campaign,
)
from simulators.sensors import SensorSpec
from stream.core.calibration import (
    HOUR_MS,
    PAIR_DTYPE,
    REFERENCE_DTYPE,
    STATION_DTYPE,
    PairingConfig,
    colocate,
    humid_term,
)
from stream.core.calibration_corrections import Correction, apply_correction, apply_corrections
from stream.core.calibration_fit import FitConfig, fit_corrections, rolling_corrections
from stream.core.exceptions import InvalidBatchError, InvalidConfigError

START_MS = 1_780_000_000_000 - (1_780_000_000_000 % HOUR_MS)  # a fixed simulated hour
METRICS = ("pm25_ugm3", "pm10_ugm3", "no2_ugm3")

# -- the campaign ---------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    """10 kits with the simulator's default errors, 14 days of rounds."""
    config = SimulationConfig(n_bikes=10, duration_s=5 * 3600, seed=3, reading_interval_s=10.0)
    return simulate_campaign(config, CampaignSpec(days=14))


@pytest.fixture(scope="module")
def drifting() -> Campaign:
    """8 kits with new NO2 cells drifting fast (0.4 µg/m³/day spread), 20 days."""
    config = SimulationConfig(
        n_bikes=8,
        duration_s=5 * 3600,
        seed=8,
        reading_interval_s=10.0,
        sensors=SensorSpec(no2_drift_spread_ugm3_per_day=0.4),
    )
    return simulate_campaign(config, CampaignSpec(days=20, new_cells=True))


@pytest.fixture(scope="module")
def pairs(campaign: Campaign) -> np.ndarray:
    return colocate(campaign.readings, campaign.station_array, campaign.reference)


def test_pm_gain_and_offset_are_recovered_within_their_stated_uncertainty(
    campaign: Campaign, pairs: np.ndarray
) -> None:
    cs = fit_corrections(pairs, end_ms=campaign.end_ms, config=FitConfig(window_days=30))
    for metric in ("pm25_ugm3", "pm10_ugm3"):
        zg, zo = kit_error_z(campaign, pairs, cs, metric)
        assert len(zg) >= 8, f"{metric}: only {len(zg)} kits with their own correction"
        assert np.mean(np.abs(zg) < 3) >= 0.8, (metric, zg)
        assert np.mean(np.abs(zo) < 3) >= 0.8, (metric, zo)
        # ... and the uncertainty is not inflated to get there: z spreads like N(0, 1).
        assert np.sqrt(np.mean(zg**2)) > 0.4


def test_no2_gain_is_recovered_for_most_kits(campaign: Campaign, pairs: np.ndarray) -> None:
    """NO2's offset is the weaker part: kits clip at 0 (docs/calibration.md, "Limits")."""
    cs = fit_corrections(pairs, end_ms=campaign.end_ms, config=FitConfig(window_days=30))
    zg, zo = kit_error_z(campaign, pairs, cs, "no2_ugm3")
    assert len(zg) >= 5
    assert np.mean(np.abs(zg) < 3) >= 0.6, zg
    assert np.mean(np.abs(zo) < 3) >= 0.5, zo


def test_humidity_growth_is_estimated_per_kit(campaign: Campaign, pairs: np.ndarray) -> None:
    """κ is estimated against the kit's own RH sensor, whose ±2 % offset moves h(RH) by
    tens of per cent near saturation: a kit's κ absorbs its hygrometer's error (which is
    what corrects that kit's readings), so only the fleet's typical κ is compared."""
    cs = fit_corrections(pairs, end_ms=campaign.end_ms)
    kappas = []
    for e in campaign.kit_errors:
        corr = cs.kits[(int(e["kit_id"]), "pm25_ugm3")]
        assert corr.terms[2] == "humidity"
        assert corr.se("kappa") > 0
        kappas.append(corr.kappa)
    assert np.median(kappas) == pytest.approx(np.median(campaign.kit_errors["pm_kappa"]), rel=0.3)


def test_a_kit_with_too_few_colocations_gets_the_fleet_correction_and_says_so(
    campaign: Campaign, pairs: np.ndarray
) -> None:
    kit = int(campaign.kit_errors["kit_id"][0])
    mine = np.flatnonzero(pairs["kit_id"] == kit)
    thinned = np.delete(pairs, mine[3:])  # three co-locations per metric at most
    cfg = FitConfig(min_pairs=10)
    cs = fit_corrections(thinned, end_ms=campaign.end_ms, config=cfg, kits=[kit, 99])
    corr = cs.kits[(kit, "pm25_ugm3")]
    assert corr.source == "fleet"
    assert corr.kit_id == kit
    assert corr.kit_pairs <= 3
    assert "fewer than 10" in corr.note
    assert corr.n_pairs == cs.fleet["pm25_ugm3"].n_pairs > 100
    assert corr.version == cs.fleet["pm25_ugm3"].version
    stranger = cs.for_kit(99, "pm25_ugm3")
    assert stranger is not None
    assert (stranger.source, stranger.kit_pairs) == ("fleet", 0)
    # The fleet's uncertainty includes the kits' spread: the kit's true gain is inside it.
    e = campaign.kit_errors[0]
    assert abs(corr.gain - e["pm_gain"]) < 3 * corr.se("gain")
    assert corr.se("gain") > 0.03  # the 8 % spread of kit gains, not the pooled fit's SE
    others = [c for (k, m), c in cs.kits.items() if m == "pm25_ugm3" and k not in (kit, 99)]
    assert all(c.source == "kit" for c in others)


def test_drift_is_followed_by_rolling_estimates(drifting: Campaign) -> None:
    pairs = colocate(drifting.readings, drifting.station_array, drifting.reference)
    cfg = FitConfig(window_days=10)
    ends = [drifting.start_ms + d * DAY_MS for d in (10, 20)]
    series = rolling_corrections(pairs, ends, config=cfg)
    followed = 0
    n_drifting = 0
    for e in drifting.kit_errors:
        kit = int(e["kit_id"])
        est = [cs.kits.get((kit, "no2_ugm3")) for cs in series]
        if (
            any(c is None or c.source != "kit" for c in est)
            or abs(e["no2_drift_ugm3_per_day"]) < 0.3
        ):
            continue
        n_drifting += 1
        # offset change from the first window to the last, against the drawn drift
        seen = est[-1].offset - est[0].offset  # type: ignore[union-attr]
        expected = e["no2_drift_ugm3_per_day"] * 10
        sigma = np.hypot(est[-1].se("offset"), est[0].se("offset"))  # type: ignore[union-attr]
        followed += abs(seen - expected) < 3 * sigma + 1.0
        assert np.sign(seen) == np.sign(expected), (kit, seen, expected)
    assert n_drifting >= 3
    assert followed == n_drifting
    assert [cs.window_end_ms for cs in series] == ends


def test_corrected_cell_hour_means_are_closer_to_the_truth(
    campaign: Campaign, pairs: np.ndarray
) -> None:
    """Over all kits, and much closer over the kits with a correction of their own (a kit
    whose NO2 cell reads 0 most of the time has only censored co-locations and the fleet's
    correction, which cannot know its offset)."""
    cs = fit_corrections(pairs, end_ms=campaign.end_ms, config=FitConfig(window_days=30))
    r = campaign.readings
    for metric in METRICS:
        corrected, unc, versions = apply_corrections(r, cs, metric)
        assert np.mean(np.isfinite(corrected)) > 0.95
        assert np.all(unc[np.isfinite(unc)] >= 0)
        raw = cell_hour_rmse(r, r[metric].astype(np.float64), metric, 9)
        fixed = cell_hour_rmse(r, corrected, metric, 9)
        assert fixed < 0.9 * raw, (metric, raw, fixed)
        own = np.isin(
            r["kit_id"], [k for (k, m), c in cs.kits.items() if m == metric and c.source == "kit"]
        )
        raw_own = cell_hour_rmse(r[own], r[metric][own].astype(np.float64), metric, 9)
        fixed_own = cell_hour_rmse(r[own], corrected[own], metric, 9)
        assert fixed_own < 0.6 * raw_own, (metric, raw_own, fixed_own)
        # every corrected value names the correction that made it
        kit = int(r["kit_id"][0])
        assert versions[0] == cs.for_kit(kit, metric).version  # type: ignore[union-attr]


# -- versions ---------------------------------------------------------------------


def test_versions_are_a_function_of_the_inputs(campaign: Campaign, pairs: np.ndarray) -> None:
    a = fit_corrections(pairs, end_ms=campaign.end_ms)
    b = fit_corrections(pairs.copy(), end_ms=campaign.end_ms)
    assert {k: c.version for k, c in a.kits.items()} == {k: c.version for k, c in b.kits.items()}
    changed = pairs.copy()
    changed["reference"][0] += 0.1
    c = fit_corrections(changed, end_ms=campaign.end_ms)
    kit, metric = int(changed["kit_id"][0]), str(changed["metric"][0])
    assert c.kits[(kit, metric)].version != a.kits[(kit, metric)].version
    later = fit_corrections(pairs, end_ms=campaign.end_ms + HOUR_MS)
    assert later.fleet["pm25_ugm3"].version != a.fleet["pm25_ugm3"].version


# -- pairing ------------------------------------------------------------------------


def _stations() -> np.ndarray:
    s = np.zeros(2, STATION_DTYPE)
    s[0] = ("NL0001", 52.0, 4.0, "background")
    s[1] = ("NL0002", 52.01, 4.0, "traffic")  # 1.1 km north
    return s


def _readings(lat: list[float], ts: list[int], pm25: list[float], kit: int = 7) -> np.ndarray:
    from firmware_protocol.readings import empty_readings  # noqa: PLC0415

    r = empty_readings(len(lat))
    r["kit_id"] = kit
    r["lat_deg"] = lat
    r["lon_deg"] = 4.0
    r["ts_ms"] = ts
    r["pm25_ugm3"] = pm25
    r["humidity_pct"] = 80.0
    return r


def _ref(station: str, hour: int, value: float, valid: bool = True) -> np.ndarray:
    out = np.zeros(1, REFERENCE_DTYPE)
    out[0] = (station, "pm25_ugm3", hour, value, valid)
    return out


M_PER_DEG_LAT = 111_195.0


def test_pairs_are_kit_hour_means_near_a_station() -> None:
    h0 = START_MS
    lat = [52.0 + d / M_PER_DEG_LAT for d in (10, 50, 90, 150, 20, 20, 20)]
    ts = [h0 + 60_000 * i for i in range(4)] + [h0 + HOUR_MS + 1000 * i for i in range(3)]
    r = _readings(lat, ts, [10, 12, 14, 99, 20, 22, 24])
    ref = np.concatenate([_ref("NL0001", h0, 11.0), _ref("NL0001", h0 + HOUR_MS, 21.0)])
    p = colocate(r, _stations(), ref, metrics=("pm25_ugm3",))
    assert p.dtype == PAIR_DTYPE
    assert p["hour_start_ms"].tolist() == [h0, h0 + HOUR_MS]
    assert p["n"].tolist() == [3, 3]  # the reading 150 m away is out
    assert p["kit_mean"].tolist() == pytest.approx([12.0, 22.0])
    assert p["reference"].tolist() == [11.0, 21.0]
    assert p["humid_term_mean"][0] == pytest.approx(humid_term(np.array([80.0]))[0])
    assert p["distance_mean_m"][0] == pytest.approx(50.0, abs=0.5)


def test_reference_metrics_may_be_named_as_the_api_names_them() -> None:
    r = _readings([52.0] * 3, [START_MS + i for i in range(3)], [4, 5, 6])
    ref = _ref("NL0001", START_MS, 5.0)
    ref["metric"] = "pm25"
    p = colocate(r, _stations(), ref, metrics=("pm25_ugm3",))
    assert p["reference"].tolist() == [5.0]
    assert p["metric"].tolist() == ["pm25_ugm3"]


def test_invalid_reference_hours_and_thin_hours_make_no_pair() -> None:
    h0 = START_MS
    lat = [52.0] * 5
    ts = [h0, h0 + 1, h0 + 2, h0 + HOUR_MS, h0 + HOUR_MS + 1]
    r = _readings(lat, ts, [1, 2, 3, 4, 5])
    ref = np.concatenate([_ref("NL0001", h0, 2.0, valid=False), _ref("NL0001", h0 + HOUR_MS, 4.0)])
    p = colocate(r, _stations(), ref, metrics=("pm25_ugm3",), config=PairingConfig(min_readings=2))
    assert p["hour_start_ms"].tolist() == [h0 + HOUR_MS]
    p = colocate(r, _stations(), ref, metrics=("pm25_ugm3",), config=PairingConfig(min_readings=3))
    assert len(p) == 0


def test_a_traffic_station_takes_only_readings_at_its_kerb() -> None:
    h0 = START_MS
    near = 52.01 + 20 / M_PER_DEG_LAT
    far = 52.01 + 60 / M_PER_DEG_LAT
    r = _readings([near] * 3 + [far] * 3, [h0 + i for i in range(6)], [5, 5, 5, 9, 9, 9])
    ref = _ref("NL0002", h0, 5.0)
    p = colocate(r, _stations(), ref, metrics=("pm25_ugm3",))
    assert p["n"].tolist() == [3]
    assert p["kit_mean"].tolist() == [5.0]
    wide = PairingConfig(traffic_max_distance_m=100.0)
    assert colocate(r, _stations(), ref, metrics=("pm25_ugm3",), config=wide)["n"].tolist() == [6]


def test_bad_input_is_refused_with_what_was_wrong() -> None:
    r = _readings([52.0], [START_MS], [1.0])
    with pytest.raises(InvalidBatchError, match="lack the column"):
        colocate(r[["kit_id", "ts_ms"]], _stations(), _ref("NL0001", START_MS, 1.0))
    with pytest.raises(InvalidConfigError, match="noise_laeq_db"):
        colocate(r, _stations(), _ref("NL0001", START_MS, 1.0), metrics=("noise_laeq_db",))
    with pytest.raises(InvalidBatchError, match="not on an hour"):
        colocate(r, _stations(), _ref("NL0001", START_MS + 5, 1.0), metrics=("pm25_ugm3",))
    twice = np.concatenate([_ref("NL0001", START_MS, 1.0), _ref("NL0001", START_MS, 2.0)])
    with pytest.raises(InvalidBatchError, match="two values"):
        colocate(r, _stations(), twice, metrics=("pm25_ugm3",))
    with pytest.raises(InvalidConfigError, match="distance"):
        PairingConfig(max_distance_m=0)
    with pytest.raises(InvalidConfigError, match="min_pairs"):
        FitConfig(min_pairs=3)


# -- the fit, on exact data -----------------------------------------------------------


def _synthetic_pairs(
    theta: tuple[float, float, float, float], refs: np.ndarray, h: np.ndarray, t: np.ndarray
) -> np.ndarray:
    o, g, q, c = theta
    p = np.zeros(len(refs), PAIR_DTYPE)
    p["kit_id"] = 5
    p["station_id"] = "NL0001"
    p["metric"] = "pm25_ugm3"
    p["hour_start_ms"] = START_MS + HOUR_MS * np.arange(len(refs))
    p["reference"] = refs
    p["humid_term_mean"] = h
    p["temperature_mean_c"] = t
    p["n"] = 10
    p["kit_mean"] = o + g * refs + q * refs * h + c * (t - 20.0)
    return p


@settings(max_examples=40, deadline=None)
@given(
    offset=st.floats(-5, 5),
    gain=st.floats(0.5, 1.5),
    kappa=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_fit_recovers_exact_linear_data(
    offset: float, gain: float, kappa: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    refs = rng.uniform(3, 40, 30)
    h = np.where(rng.random(30) < 0.5, rng.uniform(0.1, 5, 30), 0.0)
    p = _synthetic_pairs((offset, gain, gain * kappa, 0.0), refs, h, np.full(30, 20.0))
    cs = fit_corrections(p, end_ms=int(p["hour_start_ms"][-1]) + HOUR_MS)
    corr = cs.kits[(5, "pm25_ugm3")]
    assert corr.source == "kit"
    assert corr.offset == pytest.approx(offset, abs=1e-6)
    assert corr.gain == pytest.approx(gain, rel=1e-6)
    assert corr.kappa == pytest.approx(kappa, abs=1e-6)
    assert corr.residual_sd < 1e-6


def _correction(theta: tuple[float, float, float, float], cov: np.ndarray) -> Correction:
    return Correction(
        metric="pm25_ugm3",
        kit_id=1,
        source="kit",
        params=theta,
        covariance=tuple(tuple(float(v) for v in row) for row in cov),
        terms=("offset", "gain", "humidity", "temperature"),
        n_pairs=20,
        kit_pairs=20,
        window_start_ms=0,
        window_end_ms=1,
        residual_sd=1.0,
        humid_rh_pct=75.0,
        temperature_ref_c=20.0,
        version="test",
    )


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(-5, 5),
    gain=st.floats(0.5, 1.5),
    q=st.floats(0.0, 0.5),
    c=st.floats(-1, 1),
    truth=st.floats(0, 200),
    rh=st.floats(20, 99),
    temp=st.floats(-10, 35),
)
def test_applying_a_correction_inverts_the_sensor_model(
    offset: float, gain: float, q: float, c: float, truth: float, rh: float, temp: float
) -> None:
    h = humid_term(np.array([rh]))
    raw = offset + gain * truth * (1 + q / gain * h) + c * (temp - 20.0)
    corr = _correction((offset, gain, q, c), np.zeros((4, 4)))
    y, u = apply_correction(corr, raw, humidity_pct=np.array([rh]), temperature_c=np.array([temp]))
    assert y[0] == pytest.approx(truth, abs=1e-6 * max(1.0, truth))
    assert u[0] == 0.0


def test_the_propagated_uncertainty_matches_monte_carlo() -> None:
    theta = (1.0, 0.9, 0.1, 0.3)
    a = np.array(
        [[0.3, 0.01, 0.0, 0.0], [0.01, 0.002, 0.0005, 0.0], [0, 0.0005, 0.001, 0], [0, 0, 0, 0.01]]
    )
    cov = (a + a.T) / 2
    corr = _correction(theta, cov)
    raw, rh, temp = np.array([25.0]), np.array([88.0]), np.array([12.0])
    _, u = apply_correction(corr, raw, humidity_pct=rh, temperature_c=temp)
    rng = np.random.default_rng(1)
    draws = rng.multivariate_normal(theta, cov, 20_000)
    ys = [
        apply_correction(replace(corr, params=tuple(d)), raw, humidity_pct=rh, temperature_c=temp)[
            0
        ][0]
        for d in draws[:4000]
    ]
    assert u[0] == pytest.approx(np.std(ys), rel=0.1)


def test_a_correction_without_its_covariate_gives_no_value() -> None:
    corr = _correction((0.0, 1.0, 0.1, 0.0), np.zeros((4, 4)))
    y, _ = apply_correction(corr, np.array([10.0, 10.0]), humidity_pct=np.array([np.nan, 50.0]))
    assert np.isnan(y[0])
    assert y[1] == pytest.approx(10.0)
