"""Readings are aggregated at the decimal the kit sent, not the float32 they are stored in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.aggregate import aggregate
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.resolution import DECIMALS, quantise
from stream.core.summary import summarise
from tests.stream.stream_factories import T0_MS, random_enriched


def _rows(tenths: list[int], metric: Metric) -> np.ndarray:
    rows = random_enriched(0, len(tenths))
    rows["qa_flags"] = 0
    rows["cell"] = rows["cell"][0]
    rows["ts_ms"] = T0_MS
    rows["interval_ms"] = 1000
    rows[METRIC_COLUMNS[metric]] = np.asarray(tenths, dtype=np.float64) / 10
    rows["noise_lamax_db"] = 90.0
    return rows


@settings(max_examples=60, deadline=None)
@given(
    tenths=st.lists(st.integers(0, 9999), min_size=1, max_size=40),
    metric=st.sampled_from([Metric.PM25, Metric.PM10, Metric.NO2, Metric.NOISE]),
)
def test_aggregates_hold_the_decimals_the_kit_sent(tenths: list[int], metric: Metric) -> None:
    rows = _rows(tenths, metric)
    assert rows[METRIC_COLUMNS[metric]].dtype == np.float32  # stored as `real`
    partials, _ = aggregate(rows, [10], [3600])
    (p,) = partials[partials["metric"] == int(metric)]
    # 10.9 is 10.9, not float32's 10.899999618530273.
    assert p["max"] == max(tenths) / 10
    assert p["min"] == min(tenths) / 10
    (s,) = summarise(partials[partials["metric"] == int(metric)])
    assert s["mean"] == pytest.approx(sum(tenths) / 10 / len(tenths), rel=1e-12, abs=1e-12)


def test_quantise_keeps_nan_and_every_metric_has_a_resolution() -> None:
    assert set(DECIMALS) == set(Metric)
    got = quantise(Metric.TEMPERATURE, np.array([21.37, np.nan], dtype=np.float32))
    assert got[0] == 21.37
    assert np.isnan(got[1])
