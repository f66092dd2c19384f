"""Statistics the API derives from merged partials: the interval of what is shown,
and numbers rounded to what the sensors resolve.

The interval (docs/statistics.md has the derivation, its sources and the coverage
measured) is a measurement-uncertainty budget, not a spread of readings:

- **What is uncertain.** The error of a cell's mean is the kits' error, not the
  air's variation: the readings of a cell-hour spread because the air differs from
  street to street and minute to minute, and that spread is no error of the mean of
  those readings. The budget (JCGM 100:2008, the GUM, §5.1: uncorrelated components
  add in quadrature) has each kit's own constant error (offset, gain, baseline
  drift; shared by all readings of a ride), each reading's random error, and the
  known effects every kit shares. Their sizes are the fleet's :class:`ErrorModel`
  (type B, GUM §4.3): from the sensors' data sheets and the fleet's calibration
  (docs/calibration.md); the defaults are the simulated fleet's.
- **Rides weigh unequally.** A mean over rides that gave it unequal shares wᵣ (their
  readings; their sound energy for LAeq) averages the kits' errors as well as
  (Σ wᵣ)² / Σ wᵣ² equal rides would: Kish's effective number (L. Kish, *Survey
  Sampling*, Wiley 1965, §11.7; its cluster form, Gabler, Häder & Lahiri 1999,
  Survey Methodology 25, 105–106). The shares come from the presence rows
  (``storage.merged_stats.STATS_DTYPE`` ``ride_weight``, ``ride_weight_sq``).
- **Known shared effects move the interval.** Optical PM reads high in humid air,
  an NO2 cell follows the temperature, wind on the microphone and the energy mean
  of noisy levels raise LAeq. The GUM corrects a known systematic effect (§3.2.4)
  and keeps the uncertainty of the correction (§3.2.3): the interval is of the
  true value, centred on the mean less the effect, so in humid air it can lie
  below the mean shown. The covariates are the same cell-windows' humidity (PM)
  and temperature (NO2) statistics.
- **Readings clipped at zero.** The wire carries no negative concentration, so where
  a row's least reading is 0 its mean moves with a kit's error (and the NO2 cell's
  temperature term) only by the share of readings a kit without error keeps above
  zero: the GUM's sensitivity coefficient at the estimates (§5.1.3), in ``_clipped``.
- **Never below zero.** Concentrations are clipped at 0, which a true mean never
  goes below (so clipping loses no coverage).
- **When there is none.** One ride cannot tell a kit's error from the air: no
  interval, and :data:`REASONS` says why in ``interval_reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from stream.core.calibration import humid_term
from stream.core.partials import Metric
from stream.core.qa import QaConfig
from stream.core.resolution import DECIMALS

__all__ = [
    "COVARIATES",
    "DECIMALS",
    "REASONS",
    "SIMULATED_FLEET",
    "ErrorModel",
    "Intervals",
    "KitErrors",
    "finite_or_none",
    "mean_interval",
    "ride_share",
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
#: The normal 97.5 % quantile: the coverage factor of a budget whose components are
#: type B (GUM §6.3.3 and G.6.6: with many effective degrees of freedom, k ≈ 2).
_Z975 = 1.959964
_A = math.log(10.0) / 10.0  # energy = exp(_A · level in dB)
_QA = QaConfig()
#: Standard normal quantiles and their weights, for averages over a cell's readings
#: taken as normal with their mean and spread: of h(RH), cut at the fog threshold
#: (PM's readings are those below it), and of a clipped reading's variance. A fine
#: even grid over ±4 σ, so that the cut falls between nodes 0.05 σ apart
#: (Gauss–Hermite's few nodes cannot be cut).
_Z = np.linspace(-4.0, 4.0, 161)
_Z_W = np.exp(-(_Z**2) / 2.0)
_Z_W = _Z_W / _Z_W.sum()
#: A reading clipped at zero, max(0, X) with X normal of mean a and standard deviation
#: 1: it is above zero with probability Φ(a), its mean is a·Φ(a) + φ(a) and its second
#: moment (a² + 1)·Φ(a) + a·φ(a) (the censored normal: N. L. Johnson, S. Kotz and
#: N. Balakrishnan, *Continuous Univariate Distributions*, vol. 1, 2nd ed., Wiley 1994,
#: ch. 13; J. Tobin, Econometrica 26, 24–36, 1958). Tabulated over a, 0.01 apart
#: (numpy has no erf; linear interpolation between nodes is exact to 1e-5).
_CLIP_A = np.linspace(-8.0, 8.0, 1601)
_CLIP_CDF = np.array([0.5 * math.erfc(-a / math.sqrt(2.0)) for a in _CLIP_A.tolist()])
_CLIP_PDF = np.exp(-(_CLIP_A**2) / 2.0) / math.sqrt(2.0 * math.pi)
_CLIP_MEAN = _CLIP_A * _CLIP_CDF + _CLIP_PDF
_CLIP_VAR = (_CLIP_A**2 + 1.0) * _CLIP_CDF + _CLIP_A * _CLIP_PDF - _CLIP_MEAN**2

#: Why a row has no interval (``interval_reason``); None when it has one. Only
#: ``single_ride`` is given now: ``no_spread`` needs one reading (so one ride) and
#: ``zero_mean`` belonged to the log-scale interval of before.
REASONS = {
    "single_ride": "one ride: its kit's own error cannot be told from the air",
    "no_spread": "fewer than two readings: no spread to estimate",
    "zero_mean": "a mean of zero: no interval on the log scale",
}

#: The metric whose statistics over the same selection an interval needs
#: (``mean_interval``'s ``covariate``): humidity for optical PM, temperature for NO2.
COVARIATES: Mapping[Metric, Metric] = MappingProxyType(
    {
        Metric.PM1: Metric.HUMIDITY,
        Metric.PM25: Metric.HUMIDITY,
        Metric.PM10: Metric.HUMIDITY,
        Metric.NO2: Metric.TEMPERATURE,
    }
)

#: The fields of a statistics row shown in the metric's unit, rounded by :func:`rounded`.
SHOWN_FIELDS = ("mean", "std", "min", "max", "p50", "p95", "laeq_db", "lamax_db")


@dataclass(frozen=True, slots=True)
class KitErrors:
    """How wrong one kit's readings of a metric are, as standard deviations.

    ``kit_sd`` and ``kit_gain_sd`` vary from kit to kit but stay with a kit (so they
    are shared by all readings of a ride): an offset, a baseline and its drift in the
    metric's unit, and a gain error as a fraction of the value. ``reading_sd`` and
    ``reading_rel_sd`` are each reading's own random error, absolute and relative.
    """

    kit_sd: float
    reading_sd: float
    kit_gain_sd: float = 0.0
    reading_rel_sd: float = 0.0

    def __post_init__(self) -> None:
        for name in ("kit_sd", "reading_sd", "kit_gain_sd", "reading_rel_sd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (got {value})")


@dataclass(frozen=True, slots=True)
class ErrorModel:
    """A fleet's sensor errors: what the interval's budget is made of.

    ``kits``: each metric's :class:`KitErrors`. The effects every kit shares, each
    corrected in the interval and its uncertainty kept:

    - optical PM reads high by a factor 1 + κ·h(RH) above ``humid_pct``
      (``stream.core.calibration.humid_term``; κ-Köhler growth, Crilley et al. 2018,
      AMT 11, 709); readings at ``fog_pct`` and above are left out of PM
      (``QaFlag.FOG_PM``). The humidity sensors' own kit error
      (``kits[HUMIDITY].kit_sd``) makes h uncertain;
    - an NO2 cell reads ``no2_temp_coeff`` µg/m³ per °C above ``no2_temp_ref_c`` higher
      (electrochemical cells' zero current follows temperature), the coefficient
      varying from kit to kit by ``no2_temp_coeff_sd``;
    - wind on the microphone adds the energy of ``noise_wind_db`` dB(A) to every
      noise reading (its level at the fleet's typical speed); and the energy mean of
      levels with random error σ reads high by about a·σ²/2 dB (a = ln 10 / 10;
      the mean of a lognormal, Aitchison & Brown 1957, §2.3).
    """

    kits: Mapping[Metric, KitErrors]
    pm_humidity_kappa: float = 0.1
    humid_pct: float = _QA.humid_pm_rh_pct
    fog_pct: float = _QA.fog_pm_rh_pct
    no2_temp_coeff: float = 0.4
    no2_temp_coeff_sd: float = 0.2
    no2_temp_ref_c: float = 20.0
    noise_wind_db: float = -math.inf

    def __post_init__(self) -> None:
        missing = [m.api_name for m in Metric if m not in self.kits]
        if missing:
            raise ValueError(f"an error model needs every metric; missing: {', '.join(missing)}")


#: The simulated fleet's errors (simulators.sensors.SensorSpec, docs/simulator.md;
#: tests/api/test_stats.py keeps the two equal). A real fleet sets its own, from the
#: data sheets and its calibration against reference stations (docs/calibration.md,
#: "Uncertainty" and "Fleet fallback": the spread of the kits' gains and offsets).
#:
#: - PM: kit offset 0.5 µg/m³ and gain 8 %; per reading 0.5 µg/m³ + 8 % (the order of
#:   the Sensirion SPS30's precision, data sheet 2020);
#: - NO2: kit offset 4 µg/m³ and a baseline drifting 0.1 µg/m³ a day over cells up to
#:   60 days old (together √(4² + 0.1²·60²/3) = 5.29), gain 10 %; per reading 4;
#: - noise: kit offset 0.8 dB, per reading 1 dB; temperature 0.3 °C and 0.1;
#:   humidity 2 % RH and 0.5.
#: - wind: 45 dB(A) at 5 m/s, rising 20 dB a decade of speed (0.5 m/s at least); its
#:   energy mean over the fleet's speeds while the kits are on (a quadratic mean of
#:   2.8–2.9 m/s in bench/bench_coverage.py's fleets, which report it) is
#:   45 + 10·log10(2.85² / 5²) = 40 dB(A).
SIMULATED_FLEET = ErrorModel(
    kits=MappingProxyType(
        {
            Metric.PM1: KitErrors(
                kit_sd=0.5, kit_gain_sd=0.08, reading_sd=0.5, reading_rel_sd=0.08
            ),
            Metric.PM25: KitErrors(
                kit_sd=0.5, kit_gain_sd=0.08, reading_sd=0.5, reading_rel_sd=0.08
            ),
            Metric.PM10: KitErrors(
                kit_sd=0.5, kit_gain_sd=0.08, reading_sd=0.5, reading_rel_sd=0.08
            ),
            Metric.NO2: KitErrors(
                kit_sd=math.sqrt(4.0**2 + 0.1**2 * 60.0**2 / 3), kit_gain_sd=0.1, reading_sd=4.0
            ),
            Metric.NOISE: KitErrors(kit_sd=0.8, reading_sd=1.0),
            Metric.TEMPERATURE: KitErrors(kit_sd=0.3, reading_sd=0.1),
            Metric.HUMIDITY: KitErrors(kit_sd=2.0, reading_sd=0.5),
        }
    ),
    noise_wind_db=40.0,
)


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


def ride_share(stats: np.ndarray) -> np.ndarray:
    """Σ wᵣ² / (Σ wᵣ)², Kish's 1 / (effective number of rides), per row: 1/R for rides
    of equal weight, up to 1 when one ride weighs everything. Where the weights are
    not known (data stored before they were kept), 1: the interval of one ride's
    weight, never narrower than the truth."""
    rides = stats["rides"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = stats["ride_weight_sq"] / stats["ride_weight"] ** 2
        share = np.clip(share, 1.0 / rides, 1.0)
    out: np.ndarray = np.where(np.isfinite(share), share, 1.0)
    return out


def mean_interval(
    stats: np.ndarray,
    metric: Metric,
    *,
    covariate: np.ndarray | None = None,
    model: ErrorModel = SIMULATED_FLEET,
) -> Intervals:
    """The 95 % interval of the true mean (LAeq for noise) of each row of ``stats``.

    ``stats`` are ``storage.merged_stats.STATS_DTYPE`` rows. ``covariate``, row for row:
    the same selection's humidity statistics for PM, its temperature statistics for NO2
    (NaN or None where unknown: the effect is then not corrected). A corrected value
    (a finite ``correction_u``) has the correction's uncertainty in place of the kits'
    errors and shared effects.
    """
    n = stats["n"].astype(np.float64)
    rides = stats["rides"].astype(np.float64)
    share = ride_share(stats)
    kit = model.kits[metric]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if metric is Metric.NOISE:
            centre, u = _noise_budget(stats, n, share, kit, model)
        else:
            centre, u = _budget(stats, metric, n, share, kit, model, covariate)
        low, high = centre - _Z975 * u, centre + _Z975 * u
    if metric is not Metric.NOISE:
        low = np.maximum(low, 0.0)  # a concentration's true mean is never below zero
    reason: list[str | None] = [None] * len(stats)
    none = np.zeros(len(stats), dtype=bool)
    for name, rows in (("no_spread", ~(n >= 2)), ("single_ride", ~(rides >= 2))):
        for i in np.flatnonzero(rows).tolist():  # the last that applies wins
            reason[i] = name
        none |= rows
    none |= ~(np.isfinite(low) & np.isfinite(high))
    low[none] = np.nan
    high[none] = np.nan
    return Intervals(low=low, high=high, reason=reason)


def _budget(
    stats: np.ndarray,
    metric: Metric,
    n: np.ndarray,
    share: np.ndarray,
    kit: KitErrors,
    model: ErrorModel,
    covariate: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (the mean less the shared effect) and standard uncertainty of a concentration."""
    mean = stats["mean"].astype(np.float64)
    bias = np.zeros(len(stats))
    kit_var = np.full(len(stats), kit.kit_sd**2)
    known = covariate is not None
    # ∂centre/∂(an error in the metric's unit): the mean is divided by 1 + κh to take
    # the humid growth out, and with it every error the kit adds to the reading
    # (GUM §5.1.3, sensitivity coefficients; the correction's own inverse model has the
    # same −1/D, stream.core.calibration_corrections.inverse_model).
    sensitivity = np.ones(len(stats))
    # Readings clipped at zero (the wire carries no negative concentration,
    # docs/protocol.md §4.2) move with what a kit adds only while they are above
    # zero: by the share ``unclipped`` of them, for its errors and a shared additive
    # effect alike. (A factor such as the humid growth scales a clipped reading whole.)
    unclipped, noise_factor = _clipped(stats, metric, kit, share)
    if known and metric in (Metric.PM1, Metric.PM25, Metric.PM10):
        assert covariate is not None
        growth, slope = _humid_growth(covariate, model)
        growth, slope = np.nan_to_num(growth), np.nan_to_num(slope)
        bias = mean * growth / (1.0 + growth)  # reads (1 + κh) times the truth
        sensitivity = 1.0 / (1.0 + growth)
        # The humidity sensors' offsets (a kit error: shared by a ride's readings) move
        # the estimated growth by κ·h′·δ, and the centre mean/(1 + κh) by centre·κ·h′·δ/(1 + κh).
        rh_sd = model.kits[Metric.HUMIDITY].kit_sd
        kit_var = (kit.kit_sd * sensitivity) ** 2 + (
            (mean - bias) * slope * rh_sd * sensitivity
        ) ** 2
    elif known and metric is Metric.NO2:
        assert covariate is not None
        above = np.nan_to_num(covariate["mean"].astype(np.float64) - model.no2_temp_ref_c)
        bias = model.no2_temp_coeff * above * unclipped
        # The coefficient varies between kits; the temperature sensors' offsets (a kit
        # error too) move the correction by coefficient × offset.
        t_sd = model.kits[Metric.TEMPERATURE].kit_sd
        kit_var = (
            kit_var + (model.no2_temp_coeff_sd * above) ** 2 + (model.no2_temp_coeff * t_sd) ** 2
        )
    centre = mean - bias
    value = np.abs(centre)
    kit_var = (kit_var + (kit.kit_gain_sd * value) ** 2) * share * unclipped**2
    # Corrected values (values=corrected): each kit's error, humidity and temperature
    # are what its correction removed; the correction's own uncertainty ū replaces them,
    # shared by all readings it corrected (docs/calibration.md, "Intervals").
    names = stats.dtype.names or ()
    if "correction_u" in names:
        u_corr = stats["correction_u"].astype(np.float64)
        corrected = np.isfinite(u_corr)
        centre = np.where(corrected, mean, centre)
        value = np.where(corrected, np.abs(mean), value)
        kit_var = np.where(corrected, u_corr**2, kit_var)
        sensitivity = np.where(corrected, 1.0, sensitivity)
        noise_factor = np.where(corrected, 1.0, noise_factor)
    # A reading's random error is reading_sd + reading_rel_sd × the value it read (the
    # grown one in humid air): on the centre's scale, reading_sd/(1 + κh) + rel × centre.
    reading = kit.reading_sd * sensitivity + kit.reading_rel_sd * value
    u = np.sqrt(kit_var + reading**2 * noise_factor / n)
    return centre, u


def _clipped(
    stats: np.ndarray, metric: Metric, kit: KitErrors, share: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sensitivity of the mean of readings clipped at zero to a kit's
    error, and the variance of a reading's random error once clipped as a fraction of
    its variance unclipped: 1 and 1 where the least reading is not zero (the clip did
    not act; readings that go below zero are not clipped at all).

    The mean of readings max(0, x + δ) moves with a kit's error δ by the share of them
    above zero: the GUM's sensitivity coefficient (JCGM 100:2008 §5.1.3), evaluated at
    the estimates of the inputs (§5.1.2): the kits' errors at zero, the air at the
    mean. That is the share of readings a kit without error keeps above zero, Φ(mean /
    s₀), the readings of such a kit taken as normal around the mean with s₀ the
    readings' spread less what the kits' offsets and gains add between rides (their
    variance × (1 − Σ wᵣ² / (Σ wᵣ)²), the expected spread of the rides' errors around
    their weighted mean). Not the share of this row's readings above zero: a kit that
    reads low clips more, and the derivative at its readings understates its error,
    which accrued while its readings were still above zero (docs/statistics.md has
    what each choice covers). A reading's random error σₑ (reading_sd +
    reading_rel_sd × mean) is clipped with it: the variance of a clipped normal
    (``_CLIP_VAR``), averaged over the air's spread √(s₀² − σₑ²) around the mean."""
    n = stats["n"].astype(np.float64)
    mean = stats["mean"].astype(np.float64)
    sd = np.nan_to_num(stats["std"].astype(np.float64))
    at_zero = np.abs(stats["min"].astype(np.float64)) < 0.5 * 10.0 ** -DECIMALS[metric]
    at_zero &= (mean > 0) & (n >= 2)
    unclipped, factor = np.ones(len(stats)), np.ones(len(stats))
    if not at_zero.any():
        return unclipped, factor
    mean, sd, share = mean[at_zero], sd[at_zero], share[at_zero]
    noise = kit.reading_sd + kit.reading_rel_sd * mean
    between = (kit.kit_sd**2 + (kit.kit_gain_sd * mean) ** 2) * (1.0 - share)
    spread = np.sqrt(np.maximum(sd**2 - between, noise**2))
    unclipped[at_zero] = np.interp(mean / spread, _CLIP_A, _CLIP_CDF)
    air = np.sqrt(spread**2 - noise**2)
    expected = (mean[:, None] + air[:, None] * _Z[None, :]) / noise[:, None]
    factor[at_zero] = (np.interp(expected, _CLIP_A, _CLIP_VAR) * _Z_W[None, :]).sum(axis=1)
    return unclipped, factor


def _humid_growth(humidity: np.ndarray, model: ErrorModel) -> tuple[np.ndarray, np.ndarray]:
    """κ·h(RH) averaged over a cell's PM readings, and its slope per % RH, from the
    humidity's mean and spread over the same selection (taken as normal).

    PM's readings are those whose humidity is below the fog threshold (``QaFlag.FOG_PM``
    leaves out the rest), so the average is over the normal cut there. Where the whole
    normal lies at or above it (a spread of 0 in fog), at the threshold.

    Rows whose every node lies at or below ``humid_pct`` (and rows without humidity) have
    h and its slope 0 at every node, so 0 and 0: only the others are computed (an hour
    of cells is mostly dry, and the grid of 161 nodes per row was a tenth of its CPU)."""
    mean_all = humidity["mean"].astype(np.float64)
    sd_all = np.nan_to_num(humidity["std"].astype(np.float64))
    growth, slope = np.zeros(len(humidity)), np.zeros(len(humidity))
    wet = mean_all + sd_all * _Z[-1] > model.humid_pct  # the highest node; False for NaN
    if wet.any():
        growth[wet], slope[wet] = _humid_growth_nodes(mean_all[wet], sd_all[wet], model)
    return growth, slope


def _humid_growth_nodes(
    mean_rh: np.ndarray, sd_rh: np.ndarray, model: ErrorModel
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_humid_growth` of rows of humidity mean and spread (finite), over the nodes."""
    mean = mean_rh[:, None]
    sd = sd_rh[:, None]
    rh = mean + sd * _Z[None, :]
    weight = np.where(rh < model.fog_pct, _Z_W[None, :], 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.where(total > 0, weight / np.where(total > 0, total, 1.0), _Z_W[None, :])
    rh = np.minimum(rh, model.fog_pct)
    h = humid_term(rh, model.humid_pct)
    a = np.clip(rh / 100.0, 0.0, model.fog_pct / 100.0)
    slope = np.where(rh > model.humid_pct, 1.0 / (100.0 * (1.0 - a) ** 2), 0.0)
    kappa = model.pm_humidity_kappa
    return kappa * (h * weight).sum(axis=1), kappa * (slope * weight).sum(axis=1)


def _noise_budget(
    stats: np.ndarray, n: np.ndarray, share: np.ndarray, kit: KitErrors, model: ErrorModel
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (LAeq less wind and the energy mean's bias) and standard uncertainty, dB.

    A reading's error e (dB) moves LAeq by its energy weight times e: the readings'
    random errors average as over n / (1 + CV²) readings, CV the energies' coefficient
    of variation (from the levels' spread, lognormal, capped by the most energies
    between min and max can vary: Bhatia–Davis), the kits' as over the rides' energy
    shares (``share``)."""
    laeq = stats["laeq_db"].astype(np.float64)
    sd = stats["std"].astype(np.float64)
    cv = np.fmin(np.sqrt(np.expm1((_A * sd) ** 2)), _energy_cv_bound(stats, laeq))
    cv = np.where(np.isfinite(cv), cv, 0.0)
    wind = 10.0 * np.log10(1.0 + 10.0 ** ((model.noise_wind_db - laeq) / 10.0))
    jensen = _A * kit.reading_sd**2 / 2.0
    # The wind's level varies with the speed: its whole effect is its uncertainty too.
    u = np.sqrt(kit.kit_sd**2 * share + kit.reading_sd**2 * (1.0 + cv**2) / n + wind**2)
    return laeq - wind - jensen, u


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
    if "mean" in names and "n" in names:
        # Raw means from their exact sums; corrected ones (correction_u set) are off the grid.
        raw = ~np.isfinite(stats["correction_u"]) if "correction_u" in names else True
        exact = grid_mean(stats["mean"] * stats["n"], stats["n"], decimals)
        out["mean"] = np.where(raw & np.isfinite(exact), exact, out["mean"])
    # A percentile's error bound grows by what rounding the percentile moved it
    # (half a step) and is rounded up, so it still holds for the number shown.
    step = 10.0**-decimals
    for name in ("p50_err", "p95_err"):
        if name in names:
            out[name] = np.ceil((out[name] + step / 2) / step - 1e-9) * step
    return out


def grid_mean(sums: np.ndarray, n: np.ndarray, decimals: int) -> np.ndarray:
    """Means ``sums / n`` rounded to ``decimals``, decided exactly for readings on that grid.

    A raw reading is a whole number k of steps (10⁻ᵈ), so the sum of a selection is the
    whole number K = Σk and its mean K / n exactly. The stored sums are floats added in
    whatever order batches and plans merged them: off from K steps by far less than a
    hundredth of a step, so K is recovered by rounding, and the mean is rounded from
    K / n in integers (half away from zero). Two databases holding the same readings then
    show the same mean even where it lies exactly halfway between two steps, which the
    float quotient would put on either side. A sum that is not within a hundredth of a
    step of the grid (corrected values, LAeq) is rounded as a float.
    """
    n = np.asarray(n, dtype=np.int64)
    sums = np.asarray(sums, dtype=np.float64)
    scale = 10.0**decimals
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        fallback = np.round(np.where(n > 0, sums / np.where(n > 0, n, 1), np.nan), decimals)
        steps = sums * scale
        total = np.rint(steps)
        on_grid = (
            (n > 0)
            & np.isfinite(total)
            & (np.abs(total) < 2.0**53)
            & (np.abs(steps - total) < 0.01)
        )
    if not on_grid.any():
        return fallback
    k = np.where(on_grid, total, 0).astype(np.int64)
    m = np.where(on_grid, n, 1)
    rounded_steps = np.sign(k) * ((2 * np.abs(k) + m) // (2 * m))
    return np.where(on_grid, rounded_steps / scale, fallback)


def round_interval(iv: Intervals, metric: Metric) -> Intervals:
    """Bounds rounded to the nearest step of the sensor's resolution, as the mean is.

    Each bound moves by at most half a step, up or down alike, so the interval covers
    as often as before rounding (docs/statistics.md, "Rounded to the sensor's
    resolution"); rounding outward, as before, widened every interval by a step on
    average, 0.5–1.5 points of coverage for PM and noise (bench/bench_coverage.py,
    ``budget_outward``). The GUM leaves the choice to judgement (JCGM 100:2008 §7.2.6)."""
    decimals = DECIMALS[metric]
    low = np.round(iv.low, decimals)
    high = np.round(iv.high, decimals)
    if metric is not Metric.NOISE:
        low = np.maximum(low, 0.0)
    return Intervals(low=low, high=high, reason=iv.reason)


def finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
