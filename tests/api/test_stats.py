"""The 95 % interval of the mean, with rides as the independent unit."""

from __future__ import annotations

import numpy as np
import pytest

from api.stats import finite_or_none, mean_interval, t975


def test_t_quantiles_match_the_tables() -> None:
    got = t975(np.array([1, 2, 10, 30, 31, 120, 10_000, 0]))
    assert got[:4].tolist() == [12.706, 4.303, 2.228, 2.042]
    assert got[4] == pytest.approx(2.040, abs=2e-3)
    assert got[5] == pytest.approx(1.980, abs=2e-3)
    assert got[6] == pytest.approx(1.960, abs=1e-3)
    assert np.isnan(got[7])


def test_the_interval_narrows_with_rides_not_with_readings() -> None:
    mean, std = np.array([10.0, 10.0, 10.0]), np.array([2.0, 2.0, 2.0])
    low, high = mean_interval(mean, std, np.array([1, 4, 100]))
    assert np.isnan(low[0])
    assert np.isnan(high[0])  # one ride says nothing about the spread between rides
    assert high[1] - low[1] == pytest.approx(2 * 3.182 * 2 / 2)
    assert high[2] - low[2] < high[1] - low[1]


def test_finite_or_none() -> None:
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(float("inf")) is None
    assert finite_or_none(1.5) == 1.5
