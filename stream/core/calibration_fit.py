"""Per-kit corrections from co-locations, with their uncertainty: the fit.

The model is the sensor's response to the air (docs/calibration.md, "The model"),
fitted to the pairs of :func:`stream.core.calibration.colocate`:

    kit mean = offset + gain · ref · (1 + κ · h(RH)) + c · (T − 20 °C) + ε

with h the κ-Köhler growth term (:func:`stream.core.calibration.humid_term`, PM
only) and the temperature term for the NO2 cell only. It is linear in
θ = (offset, gain, gain·κ, c), so ordinary least squares gives θ and its
covariance σ̂²(XᵀX)⁻¹. The reference is the regressor because it is the accurate
variable: regressing the reference on the noisy kit mean would bias the slope
towards zero (regression dilution). The result is a
:class:`~stream.core.calibration_corrections.Correction`, which inverts the model
to correct readings (:mod:`stream.core.calibration_corrections`).

A kit with fewer than :attr:`FitConfig.min_pairs` co-locations in the window, or
whose fit fails, gets the fleet's correction (all kits' pairs pooled), whose
covariance adds the spread of the kits' own estimates around it: applied to one
kit, the fleet correction is off by that kit's own error. Estimates over a rolling
window ending at a chosen time follow drift (:func:`rolling_corrections`); each
carries a version, a hash of everything it was computed from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stream.core.calibration import PAIR_DTYPE, PM_METRICS
from stream.core.calibration_corrections import (
    GAIN,
    HUMID_GAIN,
    OFFSET,
    PARAMS,
    TEMP_COEFF,
    Correction,
    CorrectionSet,
    Source,
)
from stream.core.exceptions import InvalidBatchError, InvalidConfigError

#: Changes whenever the model or the fitting changes, so versions never collide across them.
MODEL_NAME = "bikesense-colocation-ols-1"

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class FitConfig:
    """How corrections are estimated."""

    window_days: float = 30.0  # the rolling period ending at the estimate's time
    min_pairs: int = 10  # a kit with fewer co-locations in the window falls back to the fleet
    min_humid_pairs: int = 5  # humid co-locations (h > 0) needed to estimate κ, else the fleet's
    humid_rh_pct: float = 75.0  # must be the PairingConfig's: h(RH) is computed there
    temperature_ref_c: float = 20.0
    humidity_metrics: frozenset[str] = PM_METRICS
    temperature_metrics: frozenset[str] = frozenset({"no2_ugm3"})
    min_gain: float = 0.2  # a kit that follows the air less than this is broken, not calibrated
    #: Leave out pairs with a reading at 0: the firmware clips negative concentrations
    #: (docs/protocol.md), so such a mean is biased high and bends the fitted line.
    drop_censored: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.window_days <= 3660:
            msg = f"window_days must be 0 < d <= 3660 (got {self.window_days})"
            raise InvalidConfigError(msg)
        if self.min_pairs < len(PARAMS) + 2:
            # n − p ≥ 2 degrees of freedom for σ̂ with every term in the model.
            msg = f"min_pairs must be at least {len(PARAMS) + 2} (got {self.min_pairs})"
            raise InvalidConfigError(msg)
        if self.min_humid_pairs < 2:
            msg = f"min_humid_pairs must be at least 2 (got {self.min_humid_pairs})"
            raise InvalidConfigError(msg)
        if self.min_gain <= 0:
            msg = f"min_gain must be positive (got {self.min_gain})"
            raise InvalidConfigError(msg)

    @property
    def window_ms(self) -> int:
        return round(self.window_days * DAY_MS)


def fit_corrections(
    pairs: np.ndarray,
    *,
    end_ms: int,
    config: FitConfig | None = None,
    kits: Iterable[int] = (),
) -> CorrectionSet:
    """Corrections from the pairs whose hour lies in the window [end_ms − window, end_ms).

    Every kit with a pair in the window gets a correction per metric it has pairs
    of, its own or the fleet's; ``kits`` names more kits to give the fleet's to.
    A metric with fewer pairs than ``min_pairs`` in the whole fleet has no correction.
    """
    cfg = config or FitConfig()
    if pairs.dtype != PAIR_DTYPE:
        msg = f"pairs must be PAIR_DTYPE (got {pairs.dtype})"
        raise InvalidBatchError(msg)
    start_ms = end_ms - cfg.window_ms
    window = pairs[(pairs["hour_start_ms"] >= start_ms) & (pairs["hour_start_ms"] < end_ms)]
    window = window[np.isfinite(window["kit_mean"]) & np.isfinite(window["reference"])]
    censored: dict[tuple[int, str], int] = {}
    if cfg.drop_censored:
        cut = window[window["n_zero"] > 0]
        for kit, metric in zip(cut["kit_id"].tolist(), cut["metric"].tolist(), strict=True):
            censored[(kit, metric)] = censored.get((kit, metric), 0) + 1
        window = window[window["n_zero"] == 0]
    out = CorrectionSet(start_ms, end_ms)
    wanted = {int(k) for k in kits}
    for metric in sorted(set(window["metric"].tolist())):
        mp = window[window["metric"] == metric]
        fleet = _fleet_fit(mp, metric, start_ms, end_ms, cfg)
        if fleet is None:
            continue
        fleet_kappa = _kappa_with_var(fleet) if metric in cfg.humidity_metrics else None
        own: list[Correction] = []
        fallbacks: list[tuple[int, int, str]] = []
        for kit in np.unique(mp["kit_id"]).tolist():
            kp = mp[mp["kit_id"] == kit]
            corr, why = _kit_fit(kp, metric, kit, start_ms, end_ms, cfg, fleet_kappa)
            if corr is None:
                cut = censored.get((kit, metric), 0)
                if cut:
                    why += f"; {cut} more left out with a reading at 0 (clipped, censored)"
                fallbacks.append((kit, len(kp), why))
            else:
                own.append(corr)
        fleet = _with_between_kit_spread(fleet, own)
        out.fleet[metric] = fleet
        for corr in own:
            out.kits[(int(corr.kit_id or 0), metric)] = corr
        for kit, n, why in fallbacks:
            out.kits[(kit, metric)] = replace(
                fleet, kit_id=kit, source="fleet", kit_pairs=n, note=why
            )
        more = wanted | {k for k, m in censored if m == metric}
        for kit in sorted(more - {k for k, m in out.kits if m == metric}):
            cut = censored.get((kit, metric), 0)
            why = "no co-location in the window" + (
                f" but {cut} with a reading at 0 (clipped, censored)" if cut else ""
            )
            out.kits[(kit, metric)] = replace(
                fleet, kit_id=kit, source="fleet", kit_pairs=0, note=why
            )
    return out


def rolling_corrections(
    pairs: np.ndarray,
    ends_ms: Sequence[int],
    *,
    config: FitConfig | None = None,
    kits: Iterable[int] = (),
) -> list[CorrectionSet]:
    """One estimate per end time, each over the window before it: a series that follows drift."""
    kit_list = list(kits)
    return [fit_corrections(pairs, end_ms=e, config=config, kits=kit_list) for e in ends_ms]


# -- fitting -------------------------------------------------------------------


def _design(
    pairs: np.ndarray, metric: str, cfg: FitConfig, *, humidity: bool
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Columns of X for θ indices ``cols``, and the rows that have every covariate."""
    ref = pairs["reference"]
    cols = [OFFSET, GAIN]
    xs = [np.ones(len(pairs)), ref]
    ok = np.ones(len(pairs), bool)
    if humidity:
        cols.append(HUMID_GAIN)
        xs.append(ref * pairs["humid_term_mean"])
    if metric in cfg.temperature_metrics:
        t = pairs["temperature_mean_c"] - cfg.temperature_ref_c
        ok &= np.isfinite(t)
        cols.append(TEMP_COEFF)
        xs.append(t)
    return np.stack(xs, axis=1), cols, ok


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """θ̂, σ̂²(XᵀX)⁻¹ and σ̂; None when X is rank-deficient or leaves no degree of freedom."""
    n, p = x.shape
    if n - p < 2 or np.linalg.matrix_rank(x) < p:
        return None
    theta, _, _, _ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ theta
    s2 = float(resid @ resid) / (n - p)
    cov = s2 * np.linalg.inv(x.T @ x)
    return theta, cov, float(np.sqrt(s2))


def _embed(theta: np.ndarray, cov: np.ndarray, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    full = np.zeros(4)
    full_cov = np.zeros((4, 4))
    full[cols] = theta
    full_cov[np.ix_(cols, cols)] = cov
    return full, full_cov


def _fleet_fit(
    pairs: np.ndarray, metric: str, start_ms: int, end_ms: int, cfg: FitConfig
) -> Correction | None:
    if len(pairs) < cfg.min_pairs:
        return None
    humid = metric in cfg.humidity_metrics and _humid_count(pairs) >= cfg.min_humid_pairs
    x, cols, ok = _design(pairs, metric, cfg, humidity=humid)
    fit = _ols(x[ok], pairs["kit_mean"][ok])
    if fit is None or fit[0][1] < cfg.min_gain:
        return None
    theta, cov = _embed(fit[0], fit[1], cols)
    return _correction(
        metric, None, "fleet", theta, cov, cols, pairs[ok], start_ms, end_ms, fit[2], cfg
    )


def _kit_fit(
    pairs: np.ndarray,
    metric: str,
    kit: int,
    start_ms: int,
    end_ms: int,
    cfg: FitConfig,
    fleet_kappa: tuple[float, float] | None,
) -> tuple[Correction | None, str]:
    if len(pairs) < cfg.min_pairs:
        return None, f"{len(pairs)} co-locations in the window, fewer than {cfg.min_pairs}"
    own_humid = metric in cfg.humidity_metrics and _humid_count(pairs) >= cfg.min_humid_pairs
    y = pairs["kit_mean"]
    if own_humid or fleet_kappa is None:
        x, cols, ok = _design(pairs, metric, cfg, humidity=own_humid)
        fit = _ols(x[ok], y[ok])
        if fit is None:
            return None, "its co-locations do not determine the model (no spread)"
        theta, cov = _embed(fit[0], fit[1], cols)
        used = pairs[ok]
        sd = fit[2]
    else:
        # κ from the fleet: the gain column becomes ref·(1 + κ·h), and gain·κ and its
        # variance follow from the gain and κ (delta method, κ independent of this kit's fit).
        kappa, kappa_var = fleet_kappa
        x, cols, ok = _design(pairs, metric, cfg, humidity=False)
        x[:, 1] = pairs["reference"] * (1 + kappa * pairs["humid_term_mean"])
        fit = _ols(x[ok], y[ok])
        if fit is None:
            return None, "its co-locations do not determine the model (no spread)"
        theta, cov = _embed(fit[0], fit[1], cols)
        g = theta[GAIN]
        jac = np.eye(4)
        jac[HUMID_GAIN, GAIN] = kappa
        theta[HUMID_GAIN] = g * kappa
        cov = jac @ cov @ jac.T
        cov[HUMID_GAIN, HUMID_GAIN] += g * g * kappa_var
        cols = [*cols, HUMID_GAIN]
        used = pairs[ok]
        sd = fit[2]
    if not np.all(np.isfinite(theta)) or theta[GAIN] < cfg.min_gain:
        return None, f"its fitted gain {theta[GAIN]:.3g} is below {cfg.min_gain}"
    terms_fixed = not own_humid and fleet_kappa is not None
    corr = _correction(
        metric,
        kit,
        "kit",
        theta,
        cov,
        cols,
        used,
        start_ms,
        end_ms,
        sd,
        cfg,
        fleet_kappa=terms_fixed,
    )
    return corr, ""


def _humid_count(pairs: np.ndarray) -> int:
    return int(np.sum(pairs["humid_term_mean"] > 0))


def _kappa_with_var(fleet: Correction) -> tuple[float, float] | None:
    if fleet.params[HUMID_GAIN] == 0.0 and fleet.cov[HUMID_GAIN, HUMID_GAIN] == 0.0:
        return None
    return fleet.kappa, fleet.se("kappa") ** 2


def _with_between_kit_spread(fleet: Correction, own: list[Correction]) -> Correction:
    """The fleet's covariance plus the kits' spread about it (method of moments).

    B = sample covariance of the kits' θ̂ − mean of their sampling covariances,
    its negative eigenvalues set to 0; with fewer than three kits of their own,
    the spread is unknown and the gain and offset variances are doubled instead.
    """
    cov = fleet.cov
    if len(own) >= 3:
        thetas = np.array([c.params for c in own])
        b = np.cov(thetas, rowvar=False) - np.mean([c.cov for c in own], axis=0)
        w, v = np.linalg.eigh((b + b.T) / 2)
        b = (v * np.maximum(w, 0.0)) @ v.T
        cov = cov + b
        note = f"kits' spread about the fleet from {len(own)} kits of their own"
    else:
        cov = cov * 2.0
        note = "kits' spread unknown (fewer than 3 kits of their own): variance doubled"
    return replace(fleet, covariance=_tuple_cov(cov), note=note)


def _correction(
    metric: str,
    kit: int | None,
    source: Source,
    theta: np.ndarray,
    cov: np.ndarray,
    cols: list[int],
    pairs: np.ndarray,
    start_ms: int,
    end_ms: int,
    residual_sd: float,
    cfg: FitConfig,
    *,
    fleet_kappa: bool = False,
) -> Correction:
    names = {OFFSET: "offset", GAIN: "gain", HUMID_GAIN: "humidity", TEMP_COEFF: "temperature"}
    terms = tuple(
        names[c] + (" (fleet κ)" if c == HUMID_GAIN and fleet_kappa else "") for c in sorted(cols)
    )
    params = (float(theta[0]), float(theta[1]), float(theta[2]), float(theta[3]))
    return Correction(
        metric=metric,
        kit_id=kit,
        source=source,
        params=params,
        covariance=_tuple_cov(cov),
        terms=terms,
        n_pairs=len(pairs),
        kit_pairs=len(pairs) if kit is not None else 0,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        residual_sd=residual_sd,
        humid_rh_pct=cfg.humid_rh_pct,
        temperature_ref_c=cfg.temperature_ref_c,
        version=_version(metric, kit, start_ms, end_ms, terms, pairs, cfg),
    )


def _tuple_cov(cov: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in cov)


def _version(
    metric: str,
    kit: int | None,
    start_ms: int,
    end_ms: int,
    terms: tuple[str, ...],
    pairs: np.ndarray,
    cfg: FitConfig,
) -> str:
    """A hash of the model, the settings and the exact pairs: equal inputs, equal version."""
    head = json.dumps(
        {
            "model": MODEL_NAME,
            "metric": metric,
            "kit": kit,
            "window": [start_ms, end_ms],
            "terms": list(terms),
            "config": [
                cfg.window_days,
                cfg.min_pairs,
                cfg.min_humid_pairs,
                cfg.humid_rh_pct,
                cfg.temperature_ref_c,
                cfg.min_gain,
                cfg.drop_censored,
            ],
        },
        sort_keys=True,
    ).encode()
    ordered = np.sort(pairs, order=["kit_id", "station_id", "hour_start_ms"])
    digest = hashlib.sha256(head)
    digest.update(np.ascontiguousarray(ordered).tobytes())
    return f"{MODEL_NAME.rsplit('-', 1)[-1]}-{digest.hexdigest()[:24]}"
