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
from api.queries_extra import Selection
from api.roles import Principal
from api.stats import mean_interval, std_from_sums
from bikesense.settings import Settings
from stream.core.partials import PARTIAL_DTYPE, Metric
from stream.core.summary import hist_percentile, laeq_db

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
                     end=end, min_rides=api.public_min_rides if public else 1,
                     min_days=api.public_min_days if public else 1)


@dataclass(frozen=True, slots=True)
class Summary:
    """Column-wise statistics of merged partials (one row per cell or bucket)."""

    n: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    p50: np.ndarray
    p95: np.ndarray
    laeq_db: np.ndarray
    lamax_db: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    rides: np.ndarray
    days: np.ndarray
    sufficient: np.ndarray  # bool
    colour_value: np.ndarray  # what the band is taken from: LAeq for noise, else the mean
    band: np.ndarray  # band index, NO_BAND where insufficient


def summarise(agg: np.ndarray, metric: Metric, scale: MetricScale, min_readings: int) -> Summary:
    n = agg["n"].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, agg["sum"] / n, np.nan)
    std = std_from_sums(n, agg["sum"], agg["sumsq"])
    # Percentiles as the stream core defines them (stream.core.summary), so the
    # API and exports of summaries agree to the last digit.
    partials = np.zeros(len(agg), dtype=PARTIAL_DTYPE)
    partials["metric"] = int(metric)
    for name in ("min", "max", "hist"):
        partials[name] = agg[name]
    p50 = hist_percentile(partials, 0.50)
    p95 = hist_percentile(partials, 0.95)
    is_noise = metric is Metric.NOISE
    laeq = laeq_db(agg["energy"], agg["duration_s"]) if is_noise else np.full(len(n), np.nan)
    ci_low, ci_high = mean_interval(mean, std, agg["rides"])
    sufficient = n >= min_readings
    colour_value = laeq if is_noise else mean
    band = np.where(sufficient, scale.classify(colour_value), NO_BAND).astype(np.int16)
    return Summary(n=n, mean=mean, std=std, min=agg["min"], max=agg["max"], p50=p50, p95=p95,
                   laeq_db=laeq, lamax_db=agg["lamax_db"], ci_low=ci_low, ci_high=ci_high,
                   rides=agg["rides"], days=agg["days"], sufficient=sufficient,
                   colour_value=colour_value, band=band)


def tile_bands(cells: np.ndarray, metric: Metric, scale: MetricScale,
               min_readings: int) -> np.ndarray:
    """Band index per row of :func:`api.queries_extra.cell_means` output."""
    n = cells["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric is Metric.NOISE:
            value = laeq_db(cells["energy"], cells["duration_s"])
        else:
            value = np.where(n > 0, cells["sum"] / n, np.nan)
    return np.where(n >= min_readings, scale.classify(value), NO_BAND).astype(np.int16)
