"""Event-time windows: tumbling windows aligned to multiples of their size since the epoch.

Every window size divides a day, so windows nest (a 60 s window lies inside one
900 s window, which lies inside one hour, inside one UTC day) and a window's
start is a pure function of the reading's time: late data of any age lands in
the window it belongs to (docs/design.md decision 1). Daily windows are UTC days;
local-time questions (days in a time zone, Lden periods) are answered from
hourly windows, see :mod:`stream.core.summary`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from stream.core.exceptions import InvalidConfigError

DAY_S = 86_400


def check_window_size(window_s: int) -> int:
    """Return ``window_s`` if it is a positive whole number of seconds dividing a day."""
    if isinstance(window_s, bool) or int(window_s) != window_s or window_s <= 0:
        msg = f"window size must be a positive whole number of seconds (got {window_s!r})"
        raise InvalidConfigError(msg)
    if DAY_S % int(window_s):
        msg = f"window size must divide a day ({DAY_S} s) so that windows nest (got {window_s})"
        raise InvalidConfigError(msg)
    return int(window_s)


def check_window_sizes(window_sizes_s: Iterable[int]) -> tuple[int, ...]:
    """Sorted, de-duplicated window sizes; raises on an empty or invalid list."""
    checked = tuple(sorted({check_window_size(w) for w in window_sizes_s}))
    if not checked:
        msg = "at least one window size is needed"
        raise InvalidConfigError(msg)
    return checked


def window_starts_ms(ts_ms: np.ndarray, window_s: int) -> np.ndarray:
    """Start (epoch ms, UTC) of the ``window_s`` window holding each time (floor, also < 1970)."""
    size_ms = np.int64(check_window_size(window_s) * 1000)
    t = np.asarray(ts_ms, dtype=np.int64)
    return t - np.mod(t, size_ms)


def window_starts_by_size(
    ts_ms: np.ndarray, window_sizes_s: Iterable[int]
) -> dict[int, np.ndarray]:
    """Window starts for each window size."""
    return {w: window_starts_ms(ts_ms, w) for w in check_window_sizes(window_sizes_s)}


def zone(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz``, or :class:`InvalidConfigError` naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Amsterdam'"
        raise InvalidConfigError(msg) from exc


def local_days_and_hours(ts_ms: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """Local calendar day (days since 1970-01-01) and hour (0–23) of each time in ``tz``.

    One zoneinfo conversion per distinct second; callers pass window starts or
    ride starts, which repeat a lot.
    """
    zi = zone(tz)
    seconds = np.floor_divide(np.asarray(ts_ms, dtype=np.int64), 1000)
    distinct, inverse = np.unique(seconds, return_inverse=True)
    days = np.empty(len(distinct), dtype=np.int32)
    hours = np.empty(len(distinct), dtype=np.int8)
    for i, s in enumerate(distinct.tolist()):
        local = datetime.fromtimestamp(s, tz=zi)
        days[i] = local.date().toordinal() - _EPOCH_ORDINAL
        hours[i] = local.hour
    return days[inverse].reshape(seconds.shape), hours[inverse].reshape(seconds.shape)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
