"""Statistics from merged partials: mean, sample std, percentiles from histograms, Lden."""

from __future__ import annotations

import math
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.aggregate import aggregate
from stream.core.exceptions import InvalidBatchError
from stream.core.partials import HIST_EDGES, METRIC_COLUMNS, PARTIAL_DTYPE, Metric
from stream.core.summary import ALL_DAYS, lden, summarise
from tests.stream.stream_factories import random_enriched

AMS = ZoneInfo("Europe/Amsterdam")


def pm_rows(values: list[float]) -> np.ndarray:
    rows = random_enriched(3, len(values))
    rows["qa_flags"] = 0
    rows["cell"] = rows["cell"][0]
    rows["ts_ms"] = rows["ts_ms"][0]
    rows["pm25_ugm3"] = values
    return rows


def pm_summary(values: list[float]) -> np.void:
    partials, _ = aggregate(pm_rows(values), [10], [86400])
    (row,) = summarise(partials[partials["metric"] == Metric.PM25])
    return row


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 999).map(lambda x: round(x, 1)), min_size=1, max_size=60))
def test_mean_std_min_max_match_numpy(values: list[float]) -> None:
    row = pm_summary(values)
    stored = np.asarray(values, dtype=np.float64)  # the kit's decimals, not float32's
    assert row["n"] == len(values)
    assert row["mean"] == pytest.approx(stored.mean(), rel=1e-9)
    assert row["min"] == stored.min()
    assert row["max"] == stored.max()
    if len(values) > 1:
        assert row["std"] == pytest.approx(stored.std(ddof=1), rel=1e-6, abs=1e-6)
    else:
        assert np.isnan(row["std"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 999).map(lambda x: round(x, 1)), min_size=1, max_size=60))
def test_percentiles_fall_in_the_bin_of_the_true_percentile(values: list[float]) -> None:
    row = pm_summary(values)
    stored = np.asarray(values, dtype=np.float64)  # the kit's decimals, not float32's
    edges = HIST_EDGES[Metric.PM25]
    for q, name in ((50, "p50"), (95, "p95")):
        assert stored.min() <= row[name] <= stored.max()
        # Within one bin (bounded by the data) of numpy's own (lower..higher) percentile.
        low = np.percentile(stored, q, method="lower")
        high = np.percentile(stored, q, method="higher")
        lo_edge = edges[max(np.searchsorted(edges, low, side="right") - 2, 0)]
        hi_edge = edges[min(np.searchsorted(edges, high, side="right") + 1, len(edges) - 1)]
        assert min(lo_edge, stored.min()) <= row[name] <= max(hi_edge, stored.max())


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0, 300).map(lambda x: round(x, 1)), min_size=1, max_size=80),
    st.sampled_from([Metric.PM25, Metric.NO2, Metric.NOISE]),
)
def test_the_stated_percentile_error_bound_holds(values: list[float], metric: Metric) -> None:
    """A NO2 p95 of 17 readings was 12.1 µg/m³ off with nothing said: now each
    percentile states a bound on its distance from the sample percentile, and it holds."""
    rows = pm_rows(values)
    col = METRIC_COLUMNS[metric]
    rows[col] = values
    rows["interval_ms"] = 1000
    partials, _ = aggregate(rows, [10], [86400])
    (row,) = summarise(partials[partials["metric"] == metric])
    stored = np.asarray(values, dtype=np.float64)
    for q, name in ((50, "p50"), (95, "p95")):
        truth = float(np.percentile(stored, q))
        assert abs(row[name] - truth) <= row[f"{name}_err"] + 1e-9
        assert row[f"{name}_err"] <= np.ptp(stored) + 1e-9
    if np.ptp(stored) == 0:
        assert row["p50_err"] == row["p95_err"] == 0


def test_readings_all_alike_have_no_spread() -> None:
    # Σx² − (Σx)²/n of 60 readings of 999.9 left 7.6e-6 of cancellation noise.
    assert pm_summary([999.9] * 60)["std"] == 0.0


def test_a_single_value_is_its_own_percentiles() -> None:
    row = pm_summary([12.3])
    assert row["p50"] == pytest.approx(12.3, rel=1e-6)
    assert row["p95"] == pytest.approx(12.3, rel=1e-6)


def test_non_noise_rows_have_no_noise_statistics() -> None:
    row = pm_summary([1.0, 2.0])
    assert np.isnan(row["laeq_db"])
    assert np.isnan(row["lamax_db"])


def hourly_noise(level_by_hour: dict[int, float], day: tuple[int, int, int]) -> np.ndarray:
    """One hourly noise partial per local hour given, 3600 s of measurement each."""
    out = np.zeros(len(level_by_hour), dtype=PARTIAL_DTYPE)
    for i, (hour, level) in enumerate(level_by_hour.items()):
        start = datetime(*day, hour, tzinfo=AMS)
        out[i]["metric"] = Metric.NOISE
        out[i]["resolution"] = 9
        out[i]["cell"] = 617_700_169_958_293_503
        out[i]["window_s"] = 3600
        out[i]["window_start_ms"] = int(start.timestamp()) * 1000
        out[i]["n"] = 3600
        out[i]["duration_s"] = 3600.0
        out[i]["energy"] = 3600.0 * 10 ** (level / 10)
    return out


def test_lden_of_a_constant_level_is_that_level_plus_6_4_db() -> None:
    # (12 + 4·10^0.5 + 8·10^1) / 24 = 4.7937 → +6.39 dB, the textbook figure.
    (row,) = lden(hourly_noise(dict.fromkeys(range(24), 60.0), (2026, 6, 15)), "Europe/Amsterdam")
    expected = 60 + 10 * math.log10((12 + 4 * 10**0.5 + 8 * 10) / 24)
    assert row["lden_db"] == pytest.approx(expected)
    assert row["lday_db"] == pytest.approx(60.0)
    assert (row["day_s"], row["evening_s"], row["night_s"]) == (12 * 3600, 4 * 3600, 8 * 3600)


def test_lden_uses_local_hours_and_weights_each_period() -> None:
    levels = {h: 70.0 if 7 <= h < 19 else 65.0 if 19 <= h < 23 else 55.0 for h in range(24)}
    (row,) = lden(hourly_noise(levels, (2026, 1, 15)), "Europe/Amsterdam")
    expected = 10 * math.log10((12 * 10**7 + 4 * 10**7 + 8 * 10**6.5) / 24)
    assert row["lden_db"] == pytest.approx(expected)
    assert (row["lday_db"], row["levening_db"], row["lnight_db"]) == pytest.approx((70, 65, 55))
    assert row["day"] == (date(2026, 1, 15) - date(1970, 1, 1)).days


def test_lden_needs_all_three_periods() -> None:
    (row,) = lden(hourly_noise({8: 60.0, 20: 60.0}, (2026, 6, 15)), "Europe/Amsterdam")
    assert np.isnan(row["lden_db"])
    assert np.isnan(row["lnight_db"])
    assert row["lday_db"] == pytest.approx(60.0)


def test_lden_over_all_days_pools_the_periods() -> None:
    two_days = np.concatenate(
        [
            hourly_noise(dict.fromkeys(range(24), 60.0), (2026, 6, 15)),
            hourly_noise(dict.fromkeys(range(24), 60.0), (2026, 6, 16)),
        ]
    )
    assert len(lden(two_days, "Europe/Amsterdam")) == 2
    (row,) = lden(two_days, "Europe/Amsterdam", per_day=False)
    assert row["day"] == ALL_DAYS
    assert row["lden_db"] == pytest.approx(60 + 10 * math.log10((12 + 4 * 10**0.5 + 80) / 24))


def test_lden_refuses_other_metrics_and_long_windows() -> None:
    rows = hourly_noise({8: 60.0}, (2026, 6, 15))
    rows["metric"] = Metric.PM25
    with pytest.raises(InvalidBatchError, match="noise partials only"):
        lden(rows, "Europe/Amsterdam")
    rows = hourly_noise({8: 60.0}, (2026, 6, 15))
    rows["window_s"] = 86400
    with pytest.raises(InvalidBatchError, match="divide an hour"):
        lden(rows, "Europe/Amsterdam")
