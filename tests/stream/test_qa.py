"""Per-reading QA flags, the flag set, and the publication policy."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_protocol.frames import StatusBits
from stream.core.batch import enrich
from stream.core.exceptions import InvalidConfigError
from stream.core.partials import Metric
from stream.core.policy import (
    ANNOTATING_FLAGS,
    DEFAULT_POLICY,
    EXCLUDING_FLAGS,
    PLACE_AND_TIME_FLAGS,
    PublicationPolicy,
)
from stream.core.qa import QaConfig, QaFlag, flag_names, reading_flags
from tests.stream.stream_factories import random_enriched, riding

CONFIG = QaConfig()


def flags_of(**changes: object) -> QaFlag:
    """Flags of one otherwise clean reading with ``changes`` applied."""
    r = enrich(riding(1), received_ms=0)
    r["received_ms"] = r["ts_ms"] + 1000
    for name, value in changes.items():
        r[name] = value
    return QaFlag(int(reading_flags(r, CONFIG)[0]))


def test_a_clean_reading_has_no_flags() -> None:
    assert flags_of() == 0


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"gnss_fix": 0}, QaFlag.NO_FIX),
        ({"lat_deg": np.nan}, QaFlag.NO_FIX),
        ({"lat_deg": 95.0}, QaFlag.INVALID_POSITION),
        ({"lat_deg": 0.0, "lon_deg": 0.0}, QaFlag.NULL_ISLAND),
        ({"hdop": 7.5}, QaFlag.POOR_HDOP),
        ({"hdop": np.nan, "satellites": 3}, QaFlag.POOR_HDOP),
        ({"speed_mps": 55 / 3.6 * 2}, QaFlag.IMPOSSIBLE_SPEED),  # 110 km/h: on a van
        ({"pm1_ugm3": -3.0}, QaFlag.PM_OUT_OF_RANGE),
        ({"pm10_ugm3": 1500.0}, QaFlag.PM_OUT_OF_RANGE),
        ({"pm1_ugm3": 30.0, "pm25_ugm3": 10.0, "pm10_ugm3": 40.0}, QaFlag.PM_INCONSISTENT),
        ({"humidity_pct": 88.0}, QaFlag.HUMID_PM),
        ({"humidity_pct": 97.0}, QaFlag.HUMID_PM | QaFlag.FOG_PM),
        ({"no2_ugm3": 5000.0}, QaFlag.NO2_OUT_OF_RANGE),
        ({"noise_laeq_db": 10.0, "noise_lamax_db": 12.0}, QaFlag.NOISE_OUT_OF_RANGE),
        ({"noise_laeq_db": 70.0, "noise_lamax_db": 60.0}, QaFlag.NOISE_INCONSISTENT),
        ({"interval_ms": 0}, QaFlag.BAD_INTERVAL),
        ({"temperature_c": 120.0}, QaFlag.CLIMATE_OUT_OF_RANGE),
        ({"status": StatusBits.WARMING_UP}, QaFlag.WARMING_UP),
        (
            {"status": StatusBits.PM_FAULT | StatusBits.LOW_BATTERY},
            QaFlag.PM_FAULT | QaFlag.LOW_BATTERY,
        ),
        ({"status": StatusBits.TH_FAULT}, QaFlag.CLIMATE_FAULT),
        ({"status": StatusBits.CLOCK_UNSYNCED}, QaFlag.CLOCK_UNSYNCED),
        ({"status": StatusBits.GNSS_FAULT}, QaFlag.GNSS_FAULT),
    ],
)
def test_each_check_raises_its_flag_and_only_it(changes: dict[str, object], flag: QaFlag) -> None:
    assert flags_of(**changes) == flag


def test_time_far_ahead_or_too_old_is_flagged() -> None:
    r = enrich(riding(2), received_ms=0)
    r["received_ms"] = [r["ts_ms"][0] - 10 * 60_000, r["ts_ms"][1] + 40 * 86_400_000]
    flags = reading_flags(r, CONFIG)
    assert flags.tolist() == [QaFlag.FAR_FUTURE, QaFlag.TOO_OLD]


def test_absent_values_are_not_out_of_range() -> None:
    assert (
        flags_of(
            pm25_ugm3=np.nan,
            no2_ugm3=np.nan,
            noise_laeq_db=np.nan,
            noise_lamax_db=np.nan,
            interval_ms=0,
            humidity_pct=np.nan,
        )
        == 0
    )


def test_humidity_without_pm_is_no_pm_problem() -> None:
    assert flags_of(humidity_pct=90.0, pm1_ugm3=np.nan, pm25_ugm3=np.nan, pm10_ugm3=np.nan) == 0


def test_config_refuses_nonsense() -> None:
    with pytest.raises(InvalidConfigError, match="max_speed_mps"):
        QaConfig(max_speed_mps=0)
    with pytest.raises(InvalidConfigError, match="pm_range_ugm3"):
        QaConfig(pm_range_ugm3=(10.0, 5.0))


def test_flag_names_list_single_flags() -> None:
    assert flag_names(int(QaFlag.NO_FIX | QaFlag.HUMID_PM)) == ["NO_FIX", "HUMID_PM"]
    assert flag_names(0) == []


def test_every_flag_either_excludes_or_annotates() -> None:
    excluding = 0
    for flags in EXCLUDING_FLAGS.values():
        excluding |= int(flags)
    assert excluding & int(ANNOTATING_FLAGS) == 0
    assert excluding | int(ANNOTATING_FLAGS) == int(QaFlag.ALL)
    annotating = (
        QaFlag.LOW_BATTERY | QaFlag.HUMID_PM | QaFlag.PM_INCONSISTENT | QaFlag.NOISE_INCONSISTENT
    )
    assert annotating == ANNOTATING_FLAGS
    for metric in Metric:
        assert EXCLUDING_FLAGS[metric] & PLACE_AND_TIME_FLAGS == PLACE_AND_TIME_FLAGS


#: Any H3 cell: the policy only asks whether a reading has one.
CELL = 0x8C1969492D5B9FF


def test_a_sensor_problem_excludes_only_its_own_metrics() -> None:
    r = enrich(riding(3), received_ms=0)
    r["cell"] = CELL
    r["qa_flags"] = [QaFlag.FOG_PM, QaFlag.NOISE_STUCK, QaFlag.POSITION_JUMP]
    publish = {m: DEFAULT_POLICY.publishable(r, m).tolist() for m in Metric}
    assert publish[Metric.PM25] == [False, True, False]
    assert publish[Metric.NOISE] == [True, False, False]
    assert publish[Metric.NO2] == [True, True, False]
    assert DEFAULT_POLICY.publishable_any(r).tolist() == [True, True, False]


def test_a_reading_without_a_cell_or_noise_without_an_interval_counts_for_nothing() -> None:
    r = enrich(riding(3), received_ms=0)
    r["cell"] = [CELL, 0, CELL]
    r["interval_ms"] = [1000, 1000, 0]
    assert DEFAULT_POLICY.publishable(r, Metric.PM25).tolist() == [True, False, True]
    assert DEFAULT_POLICY.publishable(r, Metric.NOISE).tolist() == [True, False, False]
    assert DEFAULT_POLICY.rule(Metric.NOISE).positive == ("interval_ms",)


def test_a_policy_is_data_that_can_be_changed() -> None:
    r = enrich(riding(1), received_ms=0)
    r["cell"] = CELL
    r["qa_flags"] = QaFlag.HUMID_PM
    strict = PublicationPolicy(
        {**EXCLUDING_FLAGS, Metric.PM25: EXCLUDING_FLAGS[Metric.PM25] | QaFlag.HUMID_PM}
    )
    assert strict.publishable(r, Metric.PM25).tolist() == [False]
    assert DEFAULT_POLICY.publishable(r, Metric.PM25).tolist() == [True]


def test_every_metrics_mask_at_once_is_each_metrics_rule() -> None:
    rng = np.random.default_rng(3)
    r = random_enriched(5, 400)
    r["cell"] = np.where(rng.random(400) < 0.2, 0, CELL)
    r["interval_ms"] = np.where(rng.random(400) < 0.2, 0, 1000)
    r["qa_flags"] = rng.choice([int(f) for f in QaFlag], 400)
    for column in ("pm25_ugm3", "no2_ugm3", "noise_laeq_db"):
        r[column][rng.random(400) < 0.2] = np.nan
    masks = DEFAULT_POLICY.publishable_masks(r)
    assert list(masks) == list(Metric)
    for metric, mask in masks.items():
        rule = DEFAULT_POLICY.rule(metric)
        expected = (
            ((r["qa_flags"] & int(rule.excluding)) == 0)
            & ~np.isnan(r[rule.value])
            & (r["cell"] != 0)
            & ((r["interval_ms"] > 0) if rule.positive else True)
        )
        assert mask.tolist() == expected.tolist(), metric
        assert DEFAULT_POLICY.publishable(r, metric).tolist() == expected.tolist()
