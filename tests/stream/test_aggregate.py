"""Partial aggregates: mergeable however batched, noise averaged on energy, the policy applied."""

from __future__ import annotations

import math
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from h3.api import basic_int as h3int
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream.core.aggregate import aggregate, hist_bins, merge_partials
from stream.core.binning import NO_CELL, parent_cells
from stream.core.exceptions import InvalidBatchError, InvalidConfigError
from stream.core.merge import merge_presence
from stream.core.partials import (
    HIST_BINS,
    HIST_EDGES,
    METRIC_COLUMNS,
    PARTIAL_DTYPE,
    PRESENCE_DTYPE,
    PRESENCE_KEY_FIELDS,
    Metric,
    metric_bit,
)
from stream.core.policy import DEFAULT_POLICY, EXCLUDING_FLAGS
from stream.core.qa import QaFlag
from stream.core.resolution import quantise
from stream.core.rides import ride_starts_ms
from stream.core.summary import laeq_db, summarise
from stream.core.windows import window_starts_ms
from tests.stream.stream_factories import T0_MS, random_enriched

RES = (7, 9, 10)
WINDOWS = (60, 3600, 86400)
EXACT = ("metric", "resolution", "cell", "window_s", "window_start_ms", "n", "min", "max", "hist")
FLOAT = ("sum", "sumsq", "energy", "duration_s")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def assert_same_partials(a: np.ndarray, b: np.ndarray) -> None:
    a, b = merge_partials(a), merge_partials(b)
    assert len(a) == len(b)
    for name in EXACT:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(a["lamax_db"], b["lamax_db"])  # NaN == NaN here
    for name in FLOAT:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-9, err_msg=name)


def assert_same_presence(a: np.ndarray, b: np.ndarray) -> None:
    """Equal once rows of a key are merged as storage merges them: metric bits OR,
    readings and noise energy add."""
    a, b = merge_presence(a), merge_presence(b)
    assert len(a) == len(b)
    for name in (*PRESENCE_KEY_FIELDS, "metrics", "readings"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["noise_energy"], b["noise_energy"], rtol=1e-9, atol=1e-9)


def noise_rows(levels_db: list[float], interval_ms: int = 1000) -> np.ndarray:
    rows = random_enriched(0, len(levels_db))
    rows["qa_flags"] = 0
    rows["cell"] = rows["cell"][0]
    rows["ts_ms"] = T0_MS
    rows["noise_laeq_db"] = levels_db
    rows["noise_lamax_db"] = np.asarray(levels_db) + 3
    rows["interval_ms"] = interval_ms
    return rows


def noise_summary(rows: np.ndarray) -> np.void:
    partials, _ = aggregate(rows, [10], [3600])
    (row,) = summarise(partials[partials["metric"] == Metric.NOISE])
    return row


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), cut=st.floats(0, 1))
def test_aggregate_of_a_union_is_the_merge_of_the_aggregates(seed: int, n: int, cut: float) -> None:
    rows = random_enriched(seed, n)
    k = int(cut * n)
    whole, whole_presence = aggregate(rows, RES, WINDOWS)
    a, pa = aggregate(rows[:k], RES, WINDOWS)
    b, pb = aggregate(rows[k:], RES, WINDOWS)
    assert_same_partials(whole, np.concatenate([a, b]))
    assert_same_presence(whole_presence, np.concatenate([pa, pb]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_aggregate_does_not_depend_on_order(seed: int, n: int) -> None:
    rows = random_enriched(seed, n)
    shuffled = rows[np.random.default_rng(seed).permutation(n)]
    p1, pr1 = aggregate(rows, RES, WINDOWS)
    p2, pr2 = aggregate(shuffled, RES, WINDOWS)
    assert_same_partials(p1, p2)
    assert_same_presence(pr1, pr2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_partials_are_unique_and_count_exactly_the_publishable_values(seed: int, n: int) -> None:
    rows = random_enriched(seed, n)
    partials, presence = aggregate(rows, RES, WINDOWS)
    assert len(merge_partials(partials)) == len(partials)
    assert len(merge_presence(presence)) == len(presence)
    np.testing.assert_array_equal(partials["hist"].sum(axis=1), partials["n"])
    for metric in METRIC_COLUMNS:
        ok = DEFAULT_POLICY.publishable(rows, metric)
        for res in RES:
            for w in WINDOWS:
                sel = (
                    (partials["metric"] == metric)
                    & (partials["resolution"] == res)
                    & (partials["window_s"] == w)
                )
                assert partials["n"][sel].sum() == ok.sum()
                # At the kit's decimals, not float32's (stream.core.resolution).
                values = quantise(metric, rows[METRIC_COLUMNS[metric]][ok])
                assert partials["sum"][sel].sum() == pytest.approx(values.sum(), rel=1e-9, abs=1e-6)


def straightforward_aggregate(
    rows: np.ndarray, resolutions: set[int], windows: set[int], day_tz: str
) -> tuple[np.ndarray, np.ndarray]:
    """Partials and presence the obvious way, for checking the roll-ups of ``aggregate``:
    every (resolution, window size) on its own, straight from the readings, a Python
    loop over them, parents from h3 and window starts from integer division."""
    masks = {m: DEFAULT_POLICY.publishable(rows, m) for m in METRIC_COLUMNS}
    partials: list[tuple[object, ...]] = []
    presence: list[tuple[object, ...]] = []
    for res in resolutions:
        for w in windows:
            groups: dict[tuple[Metric, int, int], list[int]] = {}
            rides: dict[tuple[int, int, int], list[int]] = {}
            for i, row in enumerate(rows):
                key = (
                    h3int.cell_to_parent(int(row["cell"]), res),
                    int(row["ts_ms"]) // (w * 1000) * w * 1000,
                )
                bits = 0
                for metric, mask in masks.items():
                    if mask[i]:
                        groups.setdefault((metric, *key), []).append(i)
                        bits |= metric_bit(metric)
                if bits:
                    rides.setdefault((*key, int(row["ride_id"])), []).append(i)
            for (metric, cell, start), idx in groups.items():
                values = quantise(metric, rows[METRIC_COLUMNS[metric]][idx])
                hist = np.bincount(hist_bins(metric, values), minlength=HIST_BINS)
                energy = duration = 0.0
                lamax = np.nan
                if metric is Metric.NOISE:
                    seconds = rows["interval_ms"][idx] / 1000.0
                    energy = float(np.sum(seconds * 10.0 ** (values / 10.0)))
                    duration = float(seconds.sum())
                    lamax = float(np.fmax.reduce(quantise(metric, rows["noise_lamax_db"][idx])))
                partials.append(
                    (int(metric), res, cell, w, start, len(idx), values.sum(),
                     (values * values).sum(), values.min(), values.max(), energy, duration,
                     lamax, hist)
                )  # fmt: skip
            for (cell, start, ride), idx in rides.items():
                ride_start = datetime.fromtimestamp(
                    int(ride_starts_ms(ride)) // 1000, ZoneInfo(day_tz)
                )
                heard = [i for i in idx if masks[Metric.NOISE][i]]
                level = quantise(Metric.NOISE, rows["noise_laeq_db"][heard])
                presence.append(
                    (res, cell, w, start, ride, ride_start.date().toordinal() - EPOCH_ORDINAL,
                     sum(metric_bit(m) for m, mask in masks.items() if mask[idx].any()),
                     len(idx),
                     float(np.sum(rows["interval_ms"][heard] / 1000.0 * 10.0 ** (level / 10.0))))
                )  # fmt: skip
    return np.array(partials, dtype=PARTIAL_DTYPE), np.array(presence, dtype=PRESENCE_DTYPE)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 200),
    span_ms=st.sampled_from([120_000, 7_200_000, 3 * 86_400_000]),
    resolutions=st.sets(st.integers(5, 10), min_size=1, max_size=4),
    # Sizes that do not nest in each other (600 and 900; 400 and 2700) roll up from a
    # window that nests in both (300 s; 100 s).
    windows=st.sets(
        st.sampled_from([30, 60, 400, 600, 900, 2700, 3600, 7200, 86_400]), min_size=1, max_size=4
    ),
    day_tz=st.sampled_from(["Europe/Amsterdam", "America/Los_Angeles"]),
)
@example(seed=3, n=200, span_ms=7_200_000, resolutions={7, 9}, windows={600, 900}, day_tz="UTC")
def test_rolled_up_aggregates_equal_each_key_aggregated_straight_from_the_readings(
    seed: int, n: int, span_ms: int, resolutions: set[int], windows: set[int], day_tz: str
) -> None:
    rows = random_enriched(seed, n)
    # Readings close in time as well as far apart, so that fine windows hold several.
    rows["ts_ms"] = T0_MS + np.random.default_rng(seed).integers(-span_ms, span_ms, n)
    partials, presence = aggregate(rows, sorted(resolutions), sorted(windows), day_tz)
    expected, expected_presence = straightforward_aggregate(rows, resolutions, windows, day_tz)
    assert len(merge_partials(partials)) == len(partials)
    assert len(merge_presence(presence)) == len(presence)
    assert_same_partials(partials, expected)
    assert_same_presence(presence, expected_presence)


def test_readings_with_excluding_flags_or_no_value_do_not_count() -> None:
    rows = random_enriched(1, 4)
    rows["qa_flags"] = [0, QaFlag.FOG_PM, QaFlag.NO_FIX, QaFlag.LOW_BATTERY]
    rows["pm25_ugm3"] = [10.0, 20.0, 30.0, np.nan]
    rows["noise_laeq_db"] = [60.0, 61.0, 62.0, 63.0]
    rows["interval_ms"] = 1000
    partials, _ = aggregate(rows, [9], [86400])
    pm = partials[partials["metric"] == Metric.PM25]
    assert pm["n"].sum() == 1
    assert pm["sum"].sum() == 10.0
    noise = partials[partials["metric"] == Metric.NOISE]
    assert noise["n"].sum() == 3  # FOG_PM does not touch noise; LOW_BATTERY only annotates
    assert QaFlag.FOG_PM & EXCLUDING_FLAGS[Metric.PM25]
    assert not QaFlag.FOG_PM & EXCLUDING_FLAGS[Metric.NOISE]


def test_noise_with_no_interval_does_not_count() -> None:
    rows = noise_rows([60.0, 90.0])
    rows["interval_ms"] = [1000, 0]
    assert noise_summary(rows)["n"] == 1
    assert noise_summary(rows)["laeq_db"] == pytest.approx(60.0)


def test_60_and_80_db_for_equal_time_give_77_db() -> None:
    row = noise_summary(noise_rows([60.0, 80.0]))
    assert round(float(row["laeq_db"]), 1) == 77.0
    assert row["mean"] == pytest.approx(70.0)
    assert row["lamax_db"] == pytest.approx(83.0)
    assert row["duration_s"] == pytest.approx(2.0)


def test_laeq_weights_levels_by_their_interval() -> None:
    # 60 dB for 3 s and 80 dB for 1 s: 10·lg((3·10^6 + 10^8) / 4).
    rows = noise_rows([60.0, 80.0])
    rows["interval_ms"] = [3000, 1000]
    assert noise_summary(rows)["laeq_db"] == pytest.approx(10 * math.log10((3e6 + 1e8) / 4))


levels = st.lists(st.floats(30, 130).map(lambda x: round(x, 1)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(level=st.floats(30, 130).map(lambda x: round(x, 1)), n=st.integers(1, 30))
def test_laeq_of_equal_levels_is_that_level(level: float, n: int) -> None:
    row = noise_summary(noise_rows([level] * n))
    # Stored as float32, aggregated at the kit's 0.1 dB (stream.core.resolution).
    assert row["laeq_db"] == pytest.approx(level, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(values=levels)
def test_laeq_is_never_below_the_arithmetic_mean(values: list[float]) -> None:
    row = noise_summary(noise_rows(values))
    stored = np.asarray(values, dtype=np.float64)
    assert row["laeq_db"] >= stored.mean() - 1e-9
    assert row["laeq_db"] <= stored.max() + 1e-9


def test_laeq_of_nothing_is_nan() -> None:
    assert np.isnan(laeq_db(np.array([0.0]), np.array([0.0])))[0]


def test_coarser_resolutions_and_windows_roll_up_from_finer_ones() -> None:
    rows = random_enriched(5, 500)
    partials, _ = aggregate(rows, [8, 10], [60, 3600])
    fine = partials[(partials["resolution"] == 10) & (partials["window_s"] == 60)].copy()
    fine["cell"] = parent_cells(fine["cell"], 8)
    fine["resolution"] = 8
    fine["window_start_ms"] = window_starts_ms(fine["window_start_ms"], 3600)
    fine["window_s"] = 3600
    coarse = partials[(partials["resolution"] == 8) & (partials["window_s"] == 3600)]
    assert_same_partials(fine, coarse)


def test_presence_has_one_row_per_ride_and_the_ride_day() -> None:
    rows = noise_rows([60.0] * 6)
    rows["ride_id"] = [rows["ride_id"][0]] * 3 + [rows["ride_id"][1]] * 3
    _, presence = aggregate(rows, [10], [3600])
    assert len(presence) == len(set(rows["ride_id"].tolist()))
    # Rides of random_enriched start T0 - 1 day + 7k hours: local days 20618..20619.
    assert set(presence["day"].tolist()) <= {20_618, 20_619, 20_620}


def test_empty_input_gives_empty_arrays() -> None:
    partials, presence = aggregate(random_enriched(0, 0), RES, WINDOWS)
    assert len(partials) == 0
    assert len(presence) == 0
    assert partials.dtype == PARTIAL_DTYPE


def test_bad_input_is_refused_with_a_clear_error() -> None:
    rows = random_enriched(0, 10)
    with pytest.raises(InvalidBatchError, match="missing fields: ride_id"):
        aggregate(rows[["ts_ms", "cell"]], RES, WINDOWS)
    with pytest.raises(InvalidBatchError, match="resolution 11"):
        aggregate(rows, [11], WINDOWS)
    with pytest.raises(InvalidConfigError, match="divide a day"):
        aggregate(rows, RES, [7])
    with pytest.raises(InvalidConfigError, match="time zone"):
        aggregate(rows, RES, WINDOWS, day_tz="Mars/Olympus_Mons")
    with pytest.raises(InvalidBatchError, match="PARTIAL_DTYPE"):
        merge_partials(rows)


def test_histogram_bins_cover_everything() -> None:
    for metric, edges in HIST_EDGES.items():
        assert len(edges) == HIST_BINS + 1
        values = np.array([-1e9, edges[0], edges[1], edges[-1], 1e9])
        last = HIST_BINS - 1
        np.testing.assert_array_equal(hist_bins(metric, values), [0, 0, 1, last, last])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), parts=st.integers(1, 6))
def test_merge_is_associative_and_idempotent(seed: int, n: int, parts: int) -> None:
    partials, _ = aggregate(random_enriched(seed, n), RES, WINDOWS)
    rng = np.random.default_rng(seed)
    pieces = np.array_split(partials[rng.permutation(len(partials))], parts)
    stepwise = merge_partials(pieces[0])
    for piece in pieces[1:]:
        stepwise = merge_partials(np.concatenate([stepwise, piece]))
    assert_same_partials(stepwise, partials)
    assert_same_partials(merge_partials(stepwise), stepwise)


def test_presence_counts_only_rides_with_published_readings() -> None:
    rows = noise_rows([60.0] * 4)
    rows["ride_id"] = [rows["ride_id"][0]] * 2 + [rows["ride_id"][1]] * 2
    rows["ride_id"][2:] += 1  # make sure the two rides differ
    rows["qa_flags"][2:] = QaFlag.POSITION_JUMP  # the second ride's readings are all excluded
    _, presence = aggregate(rows, [10], [3600])
    assert presence["ride_id"].tolist() == [rows["ride_id"][0]]


def test_presence_names_the_metrics_each_ride_measured() -> None:
    # Two rides through one cell-window: one with an NO2 cell, one without. The NO2
    # threshold must count one ride, not two.
    rows = random_enriched(0, 2)
    rows["qa_flags"] = 0
    rows["cell"] = rows["cell"][0]
    rows["ts_ms"] = T0_MS
    rows["ride_id"] = [rows["ride_id"][0], rows["ride_id"][0] + 1]
    rows["no2_ugm3"] = [20.0, np.nan]
    _, presence = aggregate(rows, [10], [3600])
    by_ride = {int(p["ride_id"]): int(p["metrics"]) for p in presence}
    with_no2, without = (by_ride[int(r)] for r in rows["ride_id"])
    assert with_no2 & metric_bit(Metric.NO2)
    assert not without & metric_bit(Metric.NO2)
    assert without & metric_bit(Metric.PM25)


def test_presence_says_how_many_readings_and_how_much_noise_energy_each_ride_gave() -> None:
    # Three readings of one ride and one of another in a cell-hour: the ride's share of
    # a mean is its readings (its energy for noise), the effective number of rides of
    # the interval (api/stats.py).
    rows = noise_rows([60.0, 70.0, 50.0, 80.0], interval_ms=2000)
    first = int(rows["ride_id"][0])
    rows["ride_id"] = [first, first, first, first + 1]
    rows["no2_ugm3"][1] = np.nan  # still counted: the reading counts for other metrics
    _, presence = aggregate(rows, [10], [3600])
    by_ride = {int(p["ride_id"]): p for p in presence}
    assert int(by_ride[first]["readings"]) == 3
    assert int(by_ride[first + 1]["readings"]) == 1
    energy = 2.0 * (10**6.0 + 10**7.0 + 10**5.0)  # Σ tᵢ·10^(Lᵢ/10), t = 2 s
    assert math.isclose(float(by_ride[first]["noise_energy"]), energy, rel_tol=1e-12)
    assert math.isclose(float(by_ride[first + 1]["noise_energy"]), 2.0 * 10**8.0, rel_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_presence_readings_are_the_readings_that_count_and_energy_needs_noise(
    seed: int, n: int
) -> None:
    rows = random_enriched(seed, n)
    rows["noise_laeq_db"][: n // 2] = np.nan
    _, presence = aggregate(rows, RES, WINDOWS)
    counted = np.zeros(n, dtype=bool)
    for metric in METRIC_COLUMNS:
        counted |= DEFAULT_POLICY.publishable(rows, metric)
    counted &= rows["cell"] != NO_CELL
    for res in RES:
        for w in WINDOWS:
            grain = presence[(presence["resolution"] == res) & (presence["window_s"] == w)]
            assert int(grain["readings"].sum()) == int(counted.sum())
            assert (grain["readings"] >= 1).all()
    heard = counted & DEFAULT_POLICY.publishable(rows, Metric.NOISE)
    silent = ~np.isin(presence["ride_id"], rows["ride_id"][heard])
    assert (presence["noise_energy"][silent] == 0).all()


def test_merge_presence_ors_metrics_and_adds_shares() -> None:
    rows = np.zeros(3, dtype=PRESENCE_DTYPE)
    rows["resolution"], rows["cell"], rows["window_s"] = 10, 99, 3600
    rows["ride_id"] = [1, 1, 2]
    rows["metrics"] = [metric_bit(Metric.PM25), metric_bit(Metric.NOISE), metric_bit(Metric.NO2)]
    rows["readings"] = [3, 4, 5]
    rows["noise_energy"] = [0.0, 2.5, 1.0]
    merged = merge_presence(rows)
    assert merged["ride_id"].tolist() == [1, 2]
    assert merged["metrics"].tolist() == [
        metric_bit(Metric.PM25) | metric_bit(Metric.NOISE),
        metric_bit(Metric.NO2),
    ]
    assert merged["readings"].tolist() == [7, 5]
    assert merged["noise_energy"].tolist() == [2.5, 1.0]
    with pytest.raises(InvalidBatchError, match="PRESENCE_DTYPE"):
        merge_presence(np.zeros(1, dtype=PARTIAL_DTYPE))
