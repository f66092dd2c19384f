"""From a request to a privacy-filtered selection of windows, and from merged partials to stats.

Privacy (DESIGN.md decision 4) is decided here, once, for every route:

* the public sees only windows of at least ``public_min_window_s`` (an hour),
  and only cell-windows holding at least k = ``public_min_rides`` distinct
  rides; a cell-window below k is left out (absent, never zero), and a cell
  whose remaining windows have rides on fewer than ``public_min_days`` days
  is absent too;
* keyed roles (officer, researcher, admin) see every window size and every
  cell-window (k = 1).

A range is merged from windows of one size, the largest that still gives at
least :data:`MIN_WINDOWS_PER_RANGE` windows in the range (fewer rows to read:
a month is 30 daily windows, not 720 hourly ones), and the range is widened to
whole windows of that size. Responses say which range they really cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from api.bands import NO_BAND, MetricScale
from api.config import ApiSettings
from api.roles import Principal
from api.stats import mean_interval
from bikesense.settings import Settings
from storage.queries import Selection
from stream.core.partials import Metric
from stream.core.summary import laeq_db

MIN_WINDOWS_PER_RANGE = 24


def allowed_windows(principal: Principal, settings: Settings, api: ApiSettings) -> tuple[int, ...]:
    sizes = settings.window_sizes_s
    if principal.role.is_public:
        sizes = tuple(w for w in sizes if w >= api.public_min_window_s)
    return sizes or (max(settings.window_sizes_s),)


def choose_window(range_s: float, allowed: tuple[int, ...]) -> int:
    fitting = [w for w in allowed if range_s / w >= MIN_WINDOWS_PER_RANGE]
    return max(fitting) if fitting else min(allowed)


def align(start: datetime, end: datetime, window_s: int) -> tuple[datetime, datetime]:
    """Widen [start, end) to whole windows of ``window_s``."""
    s = int(start.timestamp()) // window_s * window_s
    e = -(-int(np.ceil(end.timestamp())) // window_s) * window_s
    return datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC)


def selection(principal: Principal, api: ApiSettings, *, metric: Metric, resolution: int,
              window_s: int, start: datetime, end: datetime) -> Selection:
    public = principal.role.is_public
    return Selection(metric=metric, resolution=resolution, window_s=window_s, start=start,
                     end=end, min_rides=api.public_min_rides if public else 0,
                     min_days=api.public_min_days if public else 0)


@dataclass(frozen=True, slots=True)
class Judged:
    """What the API adds to ``storage.queries.STATS_DTYPE`` rows: interval, sufficiency, band."""

    ci_low: np.ndarray
    ci_high: np.ndarray
    sufficient: np.ndarray  # bool
    band: np.ndarray  # band index, NO_BAND where insufficient


def judge(stats: np.ndarray, metric: Metric, scale: MetricScale, min_readings: int) -> Judged:
    ci_low, ci_high = mean_interval(stats["mean"], stats["std"], stats["rides"])
    sufficient = stats["n"] >= min_readings
    # Noise is coloured by its energy average (DESIGN.md decision 3), the rest by the mean.
    value = stats["laeq_db"] if metric is Metric.NOISE else stats["mean"]
    band = np.where(sufficient, scale.classify(value), NO_BAND).astype(np.int16)
    return Judged(ci_low=ci_low, ci_high=ci_high, sufficient=sufficient, band=band)


def tile_bands(cells: np.ndarray, metric: Metric, scale: MetricScale,
               min_readings: int) -> np.ndarray:
    """Band index per row of :func:`storage.tiles.cell_means` output."""
    n = cells["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric is Metric.NOISE:
            value = laeq_db(cells["energy"], cells["duration_s"])
        else:
            value = np.where(n > 0, cells["sum"] / n, np.nan)
    return np.where(n >= min_readings, scale.classify(value), NO_BAND).astype(np.int16)
