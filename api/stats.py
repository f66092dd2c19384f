"""Statistics the API derives from merged partials: the interval of the mean.

Readings within one ride are not independent: a bike that stands at a red light
behind a bus reports the same plume ten times. Treating n readings as n
independent samples would give intervals far too narrow. We therefore take the
*ride* as the independent unit (a cluster in survey-sampling terms): with Kish's
design effect deff = 1 + (m̄ − 1)·ρ for clusters of mean size m̄ and
intra-ride correlation ρ, the effective sample size n / deff is never smaller
than the number of rides R (ρ ≤ 1). We use that bound:

    mean ± t(0.975, R − 1) · s / √R

with s the standard deviation of all readings in the cell. This is
conservative (wide) when rides are internally noisy, honest when they are
internally flat, and undefined (null) with fewer than two rides. Partials keep
no per-ride sums, so a between-ride estimator (the textbook cluster-robust
variance) is not available from them; the bound needs only what they keep.
"""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95 % Student t quantiles t(0.975, df) for df = 1..30 (standard tables,
# e.g. NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z975 = 1.959964


def t975(df: np.ndarray) -> np.ndarray:
    """t(0.975, df) per element; NaN for df < 1.

    Beyond the table, a Cornish–Fisher expansion around the normal quantile
    (Abramowitz & Stegun 26.7.5), exact to 1e-3 for df > 30.
    """
    df = np.asarray(df, dtype=np.float64)
    out = np.full(df.shape, np.nan)
    table = np.array(_T975)
    small = (df >= 1) & (df <= 30)
    out[small] = table[df[small].astype(np.int64) - 1]
    big = df > 30
    z = _Z975
    d = df[big]
    out[big] = (z + (z**3 + z) / (4 * d) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * d**2))
    return out


def mean_interval(mean: np.ndarray, std: np.ndarray, rides: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the 95 % interval of the mean, rides as the unit (see module)."""
    rides_f = np.asarray(rides, dtype=np.float64)
    half = t975(rides_f - 1) * np.asarray(std, dtype=np.float64) / np.sqrt(
        np.where(rides_f > 0, rides_f, np.nan))
    half[rides_f < 2] = np.nan
    return mean - half, mean + half


def finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)

