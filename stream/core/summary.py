"""Statistics derived from merged partials: what the API shows and exports.

Mean and sample standard deviation come from the sums; p50 and p95 are
interpolated inside the fixed histogram bins (:data:`HIST_EDGES`) and clipped
to the partial's own min and max, so a partial of one value reports that value.
Each comes with a bound on its error (:func:`hist_percentile_bounds`): the sample
percentile (numpy's default, linear between the order statistics around rank
q·(n − 1)) lies between the lower edge of the bin holding the one order statistic
and the upper edge of the bin holding the other, both clipped to min and max; the
bound is how far the reported value can be from either end. It is 0 when the
partial saw one value, and at most a bin width (1 µg/m³ below 10, 2 dB for noise).
Noise is averaged on energy, not on decibels (docs/design.md decision 3).
"""

from __future__ import annotations

import numpy as np

from stream.core.exceptions import InvalidBatchError
from stream.core.merge import group_starts, merge_partials
from stream.core.partials import HIST_EDGES, PARTIAL_KEY_FIELDS, Metric
from stream.core.windows import local_days_and_hours

SUMMARY_DTYPE = np.dtype(
    [
        ("metric", "u1"),
        ("resolution", "u1"),
        ("cell", "<i8"),
        ("window_s", "<u4"),
        ("window_start_ms", "<i8"),
        ("n", "<i8"),
        ("mean", "<f8"),  # arithmetic mean (for noise: of the interval levels, in dB)
        ("std", "<f8"),  # sample standard deviation; NaN for n < 2
        ("min", "<f8"),
        ("max", "<f8"),
        ("p50", "<f8"),  # interpolated from the histogram
        ("p95", "<f8"),
        ("p50_err", "<f8"),  # |p50 − the sample median| is at most this (see module)
        ("p95_err", "<f8"),
        ("laeq_db", "<f8"),  # noise only: 10·log10(energy / duration); NaN otherwise
        ("lamax_db", "<f8"),  # noise only: max of LAmax
        ("duration_s", "<f8"),  # noise only: time covered by the readings
    ]
)


def laeq_db(energy: np.ndarray, duration_s: np.ndarray) -> np.ndarray:
    """Equivalent continuous level 10·log10(Σ tᵢ·10^(Lᵢ/10) / Σ tᵢ); NaN without duration."""
    e = np.asarray(energy, dtype=np.float64)
    d = np.asarray(duration_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(e / d)
    return np.where((d > 0) & (e > 0), out, np.nan)


def hist_percentile(partials: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (0–1) of each partial, linear inside its histogram bin."""
    if not 0.0 <= q <= 1.0:
        msg = f"quantile must be between 0 and 1 (got {q!r})"
        raise ValueError(msg)
    out = np.full(len(partials), np.nan)
    for metric in np.unique(partials["metric"]).tolist():
        rows = np.flatnonzero(partials["metric"] == metric)
        p = partials[rows]
        hist = p["hist"].astype(np.int64)
        n = hist.sum(axis=1)
        cum = np.cumsum(hist, axis=1)
        target = q * n
        # First bin whose cumulative count reaches the target rank (never an empty bin).
        b = np.argmax((cum >= target[:, None]) & (hist > 0), axis=1)
        take = np.arange(len(p))
        count = hist[take, b]
        before = cum[take, b] - count
        edges = HIST_EDGES[Metric(metric)]
        low = np.concatenate([[-np.inf], edges[1:-1]])[b]
        high = np.concatenate([edges[1:-1], [np.inf]])[b]
        # Clip the bin to what the partial saw: the open end bins get real bounds.
        low = np.clip(low, p["min"], p["max"])
        high = np.clip(high, p["min"], p["max"])
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip((target - before) / count, 0.0, 1.0)
        out[rows] = np.where(n > 0, low + frac * (high - low), np.nan)
    return out


def hist_percentile_bounds(partials: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the sample ``q`` quantile (0–1, numpy's linear definition) of each partial
    must lie, from its histogram: [low edge of the bin of order statistic k, high edge
    of the bin of order statistic k + 1], k = ⌊q·(n − 1)⌋ + 1, clipped to min / max."""
    if not 0.0 <= q <= 1.0:
        msg = f"quantile must be between 0 and 1 (got {q!r})"
        raise ValueError(msg)
    low = np.full(len(partials), np.nan)
    high = np.full(len(partials), np.nan)
    for metric in np.unique(partials["metric"]).tolist():
        rows = np.flatnonzero(partials["metric"] == metric)
        p = partials[rows]
        hist = p["hist"].astype(np.int64)
        n = hist.sum(axis=1)
        cum = np.cumsum(hist, axis=1)
        k = np.floor(q * (n - 1)).astype(np.int64) + 1  # 1-based rank
        b_low = np.argmax(cum >= k[:, None], axis=1)
        b_high = np.argmax(cum >= np.minimum(k + 1, n)[:, None], axis=1)
        edges = HIST_EDGES[Metric(metric)]
        lows = np.concatenate([[-np.inf], edges[1:-1]])[b_low]
        highs = np.concatenate([edges[1:-1], [np.inf]])[b_high]
        ok = n > 0
        low[rows] = np.where(ok, np.clip(lows, p["min"], p["max"]), np.nan)
        high[rows] = np.where(ok, np.clip(highs, p["min"], p["max"]), np.nan)
    return low, high


def summarise(partials: np.ndarray) -> np.ndarray:
    """One ``SUMMARY_DTYPE`` row per key of ``partials`` (merged first, so any set will do)."""
    p = merge_partials(partials)
    out = np.zeros(len(p), dtype=SUMMARY_DTYPE)
    for key in PARTIAL_KEY_FIELDS:
        out[key] = p[key]
    n = p["n"].astype(np.float64)
    out["n"] = p["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = p["sum"] / n
        # Sum-of-squares form; rounding can push a zero variance slightly negative.
        var = np.maximum(p["sumsq"] - p["sum"] * mean, 0.0) / (n - 1.0)
    out["mean"] = np.where(n > 0, mean, np.nan)
    # Readings all alike have no spread; Σx² − (Σx)²/n would leave cancellation noise
    # (60 readings of 999.9 gave 7.6e-6).
    var = np.where(p["max"] == p["min"], 0.0, var)
    out["std"] = np.where(n > 1, np.sqrt(var), np.nan)
    out["min"] = p["min"]
    out["max"] = p["max"]
    out["p50"] = hist_percentile(p, 0.50)
    out["p95"] = hist_percentile(p, 0.95)
    for q, name in ((0.50, "p50"), (0.95, "p95")):
        low, high = hist_percentile_bounds(p, q)
        out[f"{name}_err"] = np.fmax(out[name] - low, high - out[name])
    noise = p["metric"] == int(Metric.NOISE)
    out["laeq_db"] = np.where(noise, laeq_db(p["energy"], p["duration_s"]), np.nan)
    out["lamax_db"] = np.where(noise, p["lamax_db"], np.nan)
    out["duration_s"] = np.where(noise, p["duration_s"], np.nan)
    return out


# Lden, EU Environmental Noise Directive 2002/49/EC, Annex I, point 1:
#   Lden = 10·lg( (12·10^(Lday/10) + 4·10^((Levening+5)/10) + 8·10^((Lnight+10)/10)) / 24 )
# with day 07–19, evening 19–23 and night 23–07 local time (the Directive's default
# periods, which the Netherlands uses), each L the A-weighted long-term average
# level (ISO 1996-2) over its period.
_PERIOD_HOURS = {"day": 12.0, "evening": 4.0, "night": 8.0}
_PERIOD_PENALTY_DB = {"day": 0.0, "evening": 5.0, "night": 10.0}

#: ``day`` of an Lden row computed over all days at once (``per_day=False``).
ALL_DAYS = np.iinfo(np.int32).min

LDEN_DTYPE = np.dtype(
    [
        ("resolution", "u1"),
        ("cell", "<i8"),
        ("day", "<i4"),  # local calendar day (days since 1970-01-01), or ALL_DAYS
        ("lden_db", "<f8"),  # NaN unless day, evening and night all have measurements
        ("lday_db", "<f8"),
        ("levening_db", "<f8"),
        ("lnight_db", "<f8"),
        ("day_s", "<f8"),  # measured seconds in each period
        ("evening_s", "<f8"),
        ("night_s", "<f8"),
    ]
)


def _period_of_hour(hours: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "day": (hours >= 7) & (hours < 19),
        "evening": (hours >= 19) & (hours < 23),
        "night": (hours >= 23) | (hours < 7),
    }


def lden(hourly_partials: np.ndarray, tz: str, *, per_day: bool = True) -> np.ndarray:
    """Lden per (resolution, cell, local day) from noise partials of windows up to an hour.

    Each window is put in the period of its local start hour, so windows must
    divide an hour (3600 s, 900 s, 60 s). A day is the local calendar day: its
    night is 00–07 and 23–24. The period levels are energy means over the time
    measured, not over the whole period: a bike passing once stands in for the
    period, which is what a mobile survey can give and why the measured seconds
    are returned too. With ``per_day=False`` all days pool into one long-term
    value per cell, the Directive's own use.
    """
    p = merge_partials(hourly_partials)
    if np.any(p["metric"] != int(Metric.NOISE)):
        msg = "lden needs noise partials only (metric NOISE)"
        raise InvalidBatchError(msg)
    if np.any(3600 % p["window_s"].astype(np.int64) != 0):
        bad = sorted(set(p["window_s"].tolist()) - {w for w in range(1, 3601) if 3600 % w == 0})
        msg = f"lden needs windows that divide an hour; got window sizes {bad}"
        raise InvalidBatchError(msg)
    days, hours = local_days_and_hours(p["window_start_ms"], tz)
    if not per_day:
        days = np.full(len(p), ALL_DAYS, dtype=np.int32)
    order = np.lexsort((days, p["cell"], p["resolution"]))
    p, days, hours = p[order], days[order], hours[order]
    firsts = group_starts(p["resolution"], p["cell"], days)
    out = np.zeros(len(firsts), dtype=LDEN_DTYPE)
    out["resolution"] = p["resolution"][firsts]
    out["cell"] = p["cell"][firsts]
    out["day"] = days[firsts]
    if len(firsts) == 0:
        return out
    weighted = np.zeros(len(firsts))
    complete = np.ones(len(firsts), dtype=bool)
    for period, in_period in _period_of_hour(hours).items():
        energy = np.add.reduceat(np.where(in_period, p["energy"], 0.0), firsts)
        seconds = np.add.reduceat(np.where(in_period, p["duration_s"], 0.0), firsts)
        level = laeq_db(energy, seconds)
        out[f"l{period}_db"] = level
        out[f"{period}_s"] = seconds
        complete &= ~np.isnan(level)
        with np.errstate(invalid="ignore"):
            weighted += _PERIOD_HOURS[period] * np.power(
                10.0, (level + _PERIOD_PENALTY_DB[period]) / 10.0
            )
    with np.errstate(divide="ignore", invalid="ignore"):
        out["lden_db"] = np.where(complete, 10.0 * np.log10(weighted / 24.0), np.nan)
    return out
