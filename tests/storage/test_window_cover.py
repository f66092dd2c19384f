"""window_cover: a range of the finest windows as the fewest windows of coarser sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.exceptions import QueryError
from storage.tiles import window_cover

DAY = 86_400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def finest_windows(segments: list[tuple[int, datetime, datetime]], finest: int) -> list[int]:
    """The finest windows (their starts, seconds) the segments stand for, in order."""
    out: list[int] = []
    for size, start, end in segments:
        a, b = int(start.timestamp()), int(end.timestamp())
        for window in range(-(-a // size) * size, b, size):
            out.extend(range(window, window + size, finest))
    return out


@given(sizes=st.sets(st.sampled_from([60, 300, 600, 900, 1800, 3600, 7200, 21_600, DAY]),
                     min_size=1, max_size=5),
       start_s=st.integers(0, 40 * DAY), length_s=st.integers(0, 20 * DAY))
def test_the_cover_stands_for_exactly_the_finest_windows_of_the_range(
        sizes: set[int], start_s: int, length_s: int) -> None:
    finest = min(sizes)
    start = EPOCH + timedelta(seconds=start_s)
    end = start + timedelta(seconds=length_s)
    segments = window_cover(start, end, sizes)
    got = finest_windows(segments, finest)
    want = list(range(-(-start_s // finest) * finest, start_s + length_s, finest))
    assert got == want  # in order, none twice, none missing
    # Segments follow each other; a coarse segment holds whole windows of its size.
    for (_, _, a_end), (_, b_start, _) in pairwise(segments):
        assert a_end == b_start
    for size, a, b in segments:
        assert size % finest == 0
        if size != finest:
            assert a.timestamp() % size == 0
            assert b.timestamp() % size == 0
            assert a < b


def test_a_week_of_hours_is_days_with_hours_at_the_ends() -> None:
    start = datetime(2026, 11, 16, 13, tzinfo=UTC)
    segments = window_cover(start, start + timedelta(days=7), (3600, DAY))
    assert segments == [
        (3600, start, datetime(2026, 11, 17, tzinfo=UTC)),
        (DAY, datetime(2026, 11, 17, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        (3600, datetime(2026, 11, 23, tzinfo=UTC), start + timedelta(days=7)),
    ]
    # Sizes that are not multiples of the finest are not used: 900 s in 600 s windows.
    assert {w for w, _, _ in window_cover(start, start + timedelta(days=2), (600, 900))} == {600}


def test_sizes_must_be_given_and_positive() -> None:
    start = datetime(2026, 11, 16, tzinfo=UTC)
    with pytest.raises(QueryError):
        window_cover(start, start + timedelta(days=1), ())
    with pytest.raises(QueryError):
        window_cover(start, start + timedelta(days=1), (0, 3600))
