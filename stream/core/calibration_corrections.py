"""A per-kit correction with its uncertainty, and applying it to readings.

A :class:`Correction` holds θ = (offset, gain, gain·κ, c) of the sensor's response
(docs/calibration.md, "The model"; fitted by :mod:`stream.core.calibration_fit`) and
its covariance Σ. Applying it inverts the model:

    corrected = (raw − offset − c · (T − 20 °C)) / (gain + gain·κ · h(RH))

with h the κ-Köhler growth term (:func:`stream.core.calibration.humid_term`), and
its standard uncertainty is √(∇ᵀ Σ ∇), ∇ the gradient of that in θ. A
:class:`CorrectionSet` is one estimate's corrections: the fleet's per metric and
each kit's, the fleet's standing in for a kit without its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from stream.core.calibration import humid_term

#: θ, in this order everywhere: offset (units of the metric), gain, gain·κ, and the
#: temperature coefficient (units per °C).
PARAMS = ("offset", "gain", "humid_gain", "temp_coeff")
#: Each parameter's index in θ.
OFFSET, GAIN, HUMID_GAIN, TEMP_COEFF = range(len(PARAMS))

Source = Literal["kit", "fleet"]


@dataclass(frozen=True, slots=True)
class Correction:
    """One kit's (or the fleet's) correction of one metric, estimated over one window."""

    metric: str
    kit_id: int | None  # None: the fleet-wide correction itself
    source: Source  # "kit": from its own co-locations; "fleet": the fleet's, see note
    params: tuple[float, float, float, float]  # θ, see PARAMS
    covariance: tuple[tuple[float, ...], ...]  # 4 × 4, of θ
    terms: tuple[str, ...]  # what was estimated: offset, gain, humidity, humidity (fleet κ), ...
    n_pairs: int  # co-locations the estimate rests on (the fleet's: all kits')
    kit_pairs: int  # the kit's own co-locations in the window
    window_start_ms: int
    window_end_ms: int
    residual_sd: float  # of the fit's kit-hour means about the model
    humid_rh_pct: float
    temperature_ref_c: float
    version: str  # hash of the model and inputs (calibration_fit): trace a value to it
    note: str = ""  # why the fleet's, when it is

    @property
    def offset(self) -> float:
        return self.params[OFFSET]

    @property
    def gain(self) -> float:
        return self.params[GAIN]

    @property
    def kappa(self) -> float:
        """Hygroscopic growth κ: gain·κ / gain."""
        return self.params[HUMID_GAIN] / self.params[GAIN]

    @property
    def temp_coeff(self) -> float:
        return self.params[TEMP_COEFF]

    @property
    def cov(self) -> np.ndarray:
        return np.array(self.covariance, dtype=np.float64)

    def se(self, name: str) -> float:
        """Standard error of a parameter of PARAMS, or of ``kappa`` (delta method)."""
        cov = self.cov
        if name == "kappa":
            g, q = self.gain, self.params[HUMID_GAIN]
            grad = np.zeros(4)
            grad[GAIN], grad[HUMID_GAIN] = -q / g**2, 1 / g
            return float(np.sqrt(max(grad @ cov @ grad, 0.0)))
        i = PARAMS.index(name)
        return float(np.sqrt(max(cov[i, i], 0.0)))


@dataclass(frozen=True, slots=True)
class CorrectionSet:
    """Every correction of one estimate: the fleet's per metric, each kit's per metric."""

    window_start_ms: int
    window_end_ms: int
    fleet: dict[str, Correction] = field(default_factory=dict)
    kits: dict[tuple[int, str], Correction] = field(default_factory=dict)

    def for_kit(self, kit_id: int, metric: str) -> Correction | None:
        """The kit's own correction, or the fleet's (source "fleet") when it has none."""
        own = self.kits.get((kit_id, metric))
        if own is not None:
            return own
        fleet = self.fleet.get(metric)
        if fleet is None:
            return None
        return replace(
            fleet,
            kit_id=kit_id,
            source="fleet",
            kit_pairs=0,
            note="no co-location in the window",
        )


def inverse_model(
    raw: Any, offset: Any, gain: Any, humid_gain: Any, temp_coeff: Any, h: Any, dt: Any
) -> Any:
    """The model inverted, y = (raw − o − c·ΔT) / (g + q·h), over operands that have
    arithmetic operators: numpy arrays here, SQL expressions in exports
    (storage/correction_sql.py). One definition, so that a corrected value in an
    export is the one the corrected aggregates use, to the last bit."""
    return (raw - offset - temp_coeff * dt) / (gain + humid_gain * h)


def apply_correction(
    correction: Correction,
    raw: np.ndarray,
    *,
    humidity_pct: np.ndarray | None = None,
    temperature_c: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrected values and the standard uncertainty the correction adds (not the reading's noise).

    y = (raw − o − c·ΔT) / (g + q·h), ΔT = T − T_ref, h = h(RH); u(y)² = ∇ᵀΣ∇ with
    ∂y/∂o = −1/D, ∂y/∂g = −y/D, ∂y/∂q = −y·h/D, ∂y/∂c = −ΔT/D, D = g + q·h. A
    humidity or temperature that is NaN (or not given) where the correction needs it
    gives NaN: the correction cannot be applied without its covariate.
    """
    x = np.asarray(raw, dtype=np.float64)
    o, g, q, c = correction.params
    h = _covariate(
        humidity_pct, q != 0.0, len(x), lambda rh: humid_term(rh, correction.humid_rh_pct)
    )
    dt = _covariate(temperature_c, c != 0.0, len(x), lambda t: t - correction.temperature_ref_c)
    denom = g + q * h
    y = inverse_model(x, o, g, q, c, h, dt)
    grad = np.stack([-1.0 / denom, -y / denom, -y * h / denom, -dt / denom], axis=1)
    var = np.einsum("ni,ij,nj->n", grad, correction.cov, grad)
    return y, np.sqrt(np.maximum(var, 0.0))


def apply_corrections(
    readings: np.ndarray, corrections: CorrectionSet, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each reading's corrected ``metric``, its uncertainty and its correction's version.

    Readings of a kit without any correction (and no fleet correction) get NaN and
    version "".
    """
    names = readings.dtype.names or ()
    values = np.full(len(readings), np.nan)
    unc = np.full(len(readings), np.nan)
    versions = np.full(len(readings), "", dtype="<U40")
    kit_ids = readings["kit_id"]
    for kit in np.unique(kit_ids).tolist():
        corr = corrections.for_kit(int(kit), metric)
        if corr is None:
            continue
        sel = np.flatnonzero(kit_ids == kit)
        rows = readings[sel]
        y, u = apply_correction(
            corr,
            rows[metric],
            humidity_pct=rows["humidity_pct"] if "humidity_pct" in names else None,
            temperature_c=rows["temperature_c"] if "temperature_c" in names else None,
        )
        values[sel], unc[sel], versions[sel] = y, u, corr.version
    return values, unc, versions


def _covariate(
    values: np.ndarray | None,
    needed: bool,
    n: int,
    transform: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The model's covariate for each reading; 0 where the correction has no such term."""
    if not needed:
        return np.zeros(n)
    if values is None:
        return np.full(n, np.nan)
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), transform(v), np.nan)
