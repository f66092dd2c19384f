"""Statistics the API derives from merged partials: the interval of what is shown,
and numbers rounded to what the sensors resolve.

The interval (docs/statistics.md has the derivation and the coverage measured):

- **Which number.** The interval belongs to the number the map colours: the
  arithmetic mean for concentrations, LAeq (the energy mean, docs/design.md
  decision 3) for noise.
- **Effective sample size.** Readings of one ride are correlated: the kit's
  calibration error is shared by all of them, and a bike stuck behind a bus
  reports the same plume many times. With m̄ = n / R readings per ride and an
  intra-ride correlation ρ, Kish's design effect is deff = 1 + (m̄ − 1)·ρ and the
  effective sample size n_eff = n / deff (Kish, *Survey Sampling*, 1965, §5.4;
  Kish 1995, "Methods for design effects", J. Official Statistics 11(1)). ρ = 1
  makes n_eff = R, the rides alone (what this module did before, three times too
  wide); ρ = 0 would treat every reading as independent (far too narrow). ρ per
  metric is :data:`INTRA_RIDE_CORRELATION`, measured by ``bench/bench_coverage.py``.
  The t quantile has ⌊n_eff⌋ − 1 degrees of freedom, the usual companion of an
  effective sample size (Bretherton et al. 1999, J. Climate 12(7)), at
  least R − 1 since n_eff ≥ R.
- **Never below zero.** Concentrations get the interval of log(mean) by the delta
  method, SE(log x̄) ≈ SE(x̄) / x̄, back-transformed: x̄·exp(±t·SE / x̄). It is
  asymmetric and positive for a positive mean.
- **Noise on the energy scale.** Partials keep Σ L and Σ L² of the levels, not of
  the energies; with the levels' spread σ (dB) and a lognormal energy
  (Aitchison & Brown, *The Lognormal Distribution*, 1957, §2.3) the energies'
  coefficient of variation is √(exp((a·σ)²) − 1), a = ln 10 / 10, capped by the
  most the energies between the min and max level can vary (Bhatia–Davis), and
  LAeq ± t·CV / (a·√n_eff) dB is the interval of 10·log10 of the energy mean.
- **When there is none.** One ride cannot tell a kit's error from the air: no
  interval, and :data:`REASONS` says why in ``interval_reason``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.core.partials import Metric
from stream.core.resolution import DECIMALS

__all__ = [
    "DECIMALS",
    "INTRA_RIDE_CORRELATION",
    "REASONS",
    "Intervals",
    "effective_n",
    "finite_or_none",
    "mean_interval",
    "round_interval",
    "rounded",
    "t975",
]

# Two-sided 95 % Student t quantiles t(0.975, df) for df = 1..30 (standard tables,
# e.g. NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
_Z975 = 1.959964
_A = math.log(10.0) / 10.0  # energy = exp(_A · level in dB)

#: Intra-ride correlation ρ of the readings per metric, for the design effect (see
#: module). Measured on the simulator's ground truth by bench/bench_coverage.py
#: --scan-rho (30 bikes, 5 h, a reading every 2 s, seeds 7, 23 and 31 pooled: the ρ,
#: in steps of 0.1, whose 95 % intervals cover closest to 95 % of the true cell-hour
#: means at resolutions 9–10; docs/statistics.md). Temperature and humidity were not
#: measured: ρ = 1, rides only.
#: A real fleet's ρ comes from its own co-located rides; these are the simulator's.
INTRA_RIDE_CORRELATION: dict[Metric, float] = {
    Metric.PM1: 0.4,
    Metric.PM25: 0.4,
    Metric.PM10: 0.4,
    Metric.NO2: 0.5,
    Metric.NOISE: 0.3,
    Metric.TEMPERATURE: 1.0,
    Metric.HUMIDITY: 1.0,
}

#: Why a row has no interval (``interval_reason``); None when it has one.
REASONS = {
    "single_ride": "one ride: its kit's own error cannot be told from the air",
    "no_spread": "fewer than two readings: no spread to estimate",
    "zero_mean": "a mean of zero: no interval on the log scale",
}

#: The fields of a statistics row shown in the metric's unit, rounded by :func:`rounded`.
SHOWN_FIELDS = ("mean", "std", "min", "max", "p50", "p95", "laeq_db", "lamax_db")


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
    out[big] = z + (z**3 + z) / (4 * d) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * d**2)
    return out


@dataclass(frozen=True, slots=True)
class Intervals:
    """95 % intervals of the shown value, row by row; NaN bounds where ``reason`` says why."""

    low: np.ndarray
    high: np.ndarray
    reason: list[str | None]


def effective_n(n: np.ndarray, rides: np.ndarray, rho: float) -> np.ndarray:
    """Kish's n / (1 + (n/R − 1)·ρ): between R (ρ = 1) and n (ρ = 0)."""
    n = np.asarray(n, dtype=np.float64)
    r = np.asarray(rides, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return n / (1.0 + (n / r - 1.0) * rho)


def mean_interval(stats: np.ndarray, metric: Metric, *, rho: float | None = None) -> Intervals:
    """The 95 % interval of the mean (LAeq for noise) of each row of ``stats``.

    ``stats`` needs ``n``, ``mean``, ``std`` and ``rides`` (and ``laeq_db`` for
    noise), as ``storage.merged_stats.STATS_DTYPE`` rows have; ``rho`` overrides
    :data:`INTRA_RIDE_CORRELATION`.
    """
    rho = INTRA_RIDE_CORRELATION[metric] if rho is None else rho
    # Corrected values: the correction's own uncertainty, shared by the readings it
    # corrected, is added to the mean's standard error in quadrature (docs/calibration.md,
    # "Intervals"); raw values have none (NaN).
    names = stats.dtype.names or ()
    u_corr = (
        np.nan_to_num(stats["correction_u"].astype(np.float64), nan=0.0)
        if "correction_u" in names
        else np.zeros(len(stats))
    )
    n = stats["n"].astype(np.float64)
    rides = stats["rides"].astype(np.float64)
    mean = stats["mean"].astype(np.float64)
    std = stats["std"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = effective_n(n, rides, rho)
        t_over_root_n = t975(np.floor(n_eff) - 1) / np.sqrt(n_eff)
        if metric is Metric.NOISE:
            centre = stats["laeq_db"].astype(np.float64)
            cv = np.fmin(np.sqrt(np.expm1((_A * std) ** 2)), _energy_cv_bound(stats, centre))
            half = t_over_root_n * cv / _A
            low, high = centre - half, centre + half
        else:
            t = t975(np.floor(n_eff) - 1)
            se = np.sqrt((std / np.sqrt(n_eff)) ** 2 + u_corr**2)
            half_log = t * se / mean
            low, high = mean * np.exp(-half_log), mean * np.exp(half_log)
    reason: list[str | None] = [None] * len(stats)
    none = np.zeros(len(stats), dtype=bool)
    for name, rows in (
        ("zero_mean", (mean <= 0) & (metric is not Metric.NOISE)),
        ("no_spread", ~(n >= 2) | ~np.isfinite(std)),
        ("single_ride", ~(rides >= 2)),
    ):  # the last that applies wins
        for i in np.flatnonzero(rows).tolist():
            reason[i] = name
        none |= rows
    none |= ~(np.isfinite(low) & np.isfinite(high))
    low[none] = np.nan
    high[none] = np.nan
    return Intervals(low=low, high=high, reason=reason)


def _energy_cv_bound(stats: np.ndarray, laeq: np.ndarray) -> np.ndarray:
    """Bhatia–Davis: a variable within [m, M] with mean μ has variance at most
    (M − μ)(μ − m) (Bhatia & Davis 2000, Amer. Math. Monthly 107(4)); here on the
    energies of the levels' min and max, as a coefficient of variation."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mean = np.exp(_A * laeq)
        top, bottom = np.exp(_A * stats["max"]), np.exp(_A * stats["min"])
        cv: np.ndarray = np.sqrt(np.maximum((top - mean) * (mean - bottom), 0.0)) / mean
    return cv


def rounded(stats: np.ndarray, metric: Metric) -> np.ndarray:
    """A copy of ``stats`` with the shown fields rounded to the sensor's resolution.

    Bands are decided on these, the numbers a person reads: a mean stored as
    4.999999999 is shown and coloured as 5.0 (the readings are 0.1 multiples).
    """
    out = stats.copy()
    decimals = DECIMALS[metric]
    names = out.dtype.names or ()
    for name in SHOWN_FIELDS:
        if name in names:
            out[name] = np.round(out[name], decimals)
    # A percentile's error bound grows by what rounding the percentile moved it
    # (half a step) and is rounded up, so it still holds for the number shown.
    step = 10.0**-decimals
    for name in ("p50_err", "p95_err"):
        if name in names:
            out[name] = np.ceil((out[name] + step / 2) / step - 1e-9) * step
    return out


def round_interval(iv: Intervals, metric: Metric) -> Intervals:
    """Bounds widened outward to the sensor's resolution, so rounding never narrows them."""
    scale = 10.0 ** DECIMALS[metric]
    # The 1e-9 keeps a bound that is already a multiple (up to float error) where it is.
    low = np.floor(iv.low * scale + 1e-9) / scale
    high = np.ceil(iv.high * scale - 1e-9) / scale
    if metric is not Metric.NOISE:
        low = np.maximum(low, 0.0)
    return Intervals(low=low, high=high, reason=iv.reason)


def finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
