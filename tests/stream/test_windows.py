"""Event-time windows aligned to the epoch, nested, also before 1970; local days and hours."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.exceptions import InvalidConfigError
from stream.core.windows import (
    check_window_sizes,
    local_days_and_hours,
    window_starts_by_size,
    window_starts_ms,
)

SIZES = (1, 60, 900, 3600, 7200, 86400)
times = st.integers(-(2**40), 2**42)


@given(ts=st.lists(times, min_size=1, max_size=50), window_s=st.sampled_from(SIZES))
def test_a_window_holds_its_reading_and_starts_on_a_multiple(ts: list[int], window_s: int) -> None:
    t = np.array(ts, dtype=np.int64)
    start = window_starts_ms(t, window_s)
    assert np.all(start <= t)
    assert np.all(t < start + window_s * 1000)
    assert np.all(start % (window_s * 1000) == 0)


@given(ts=st.lists(times, min_size=1, max_size=50))
def test_windows_nest(ts: list[int]) -> None:
    starts = window_starts_by_size(np.array(ts), [86400, 60, 900, 3600])
    assert list(starts) == [60, 900, 3600, 86400]
    for small, big in ((60, 900), (900, 3600), (3600, 86400)):
        assert np.all(window_starts_ms(starts[small], big) == starts[big])


def test_window_sizes_must_divide_a_day() -> None:
    assert check_window_sizes([3600, 60, 60]) == (60, 3600)
    for bad in (0, -60, 7, 7000, 172800):
        with pytest.raises(InvalidConfigError):
            check_window_sizes([bad])
    with pytest.raises(InvalidConfigError, match="at least one"):
        check_window_sizes([])


def test_local_days_and_hours_follow_summer_time() -> None:
    def ms(*args: int) -> int:
        return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000

    # 22:30 UTC is 00:30 next day in Amsterdam in summer (UTC+2), 23:30 in winter (UTC+1).
    days, hours = local_days_and_hours(
        np.array([ms(2026, 6, 15, 22, 30), ms(2026, 1, 15, 22, 30)]), "Europe/Amsterdam"
    )
    epoch = date(1970, 1, 1)
    assert days.tolist() == [(date(2026, 6, 16) - epoch).days, (date(2026, 1, 15) - epoch).days]
    assert hours.tolist() == [0, 23]
