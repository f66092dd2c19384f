"""Corrections over periods of whole days: which estimate applies to which readings.

A stored correction applies to a kit's readings in a *valid period* (docs/calibration.md,
"Storage"): whole UTC days, so that every stored window, all of which divide a day,
lies in exactly one. :func:`plan_periods` cuts a range into periods of ``step`` days;
:func:`fit_periods` estimates each period's corrections over a window *centred* on it
(the best estimate of the sensor's state during the period, from the co-locations
before and after: a retrospective smoother, where the rolling estimates of
:func:`stream.core.calibration_fit.rolling_corrections` look back only);
:func:`apply_periods` corrects readings with the correction of their kit's period.
Pure numpy, as the rest of the core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stream.core.calibration_corrections import Correction, CorrectionSet, apply_correction
from stream.core.calibration_fit import DAY_MS, FitConfig, fit_corrections
from stream.core.exceptions import InvalidBatchError, InvalidConfigError

#: Versions are "<model>-<24 hex digits>" (stream.core.calibration_fit._version).
VERSION_DTYPE = "<U40"


@dataclass(frozen=True, slots=True)
class PeriodFit:
    """The corrections of one valid period [start_ms, end_ms), fitted over a window around it."""

    start_ms: int
    end_ms: int
    corrections: CorrectionSet

    def for_kits(self, kits: Iterable[int], metric: str) -> list[Correction]:
        """The correction of each kit (its own, or the fleet's), for those that have one."""
        out = []
        for kit in sorted({int(k) for k in kits}):
            corr = self.corrections.for_kit(kit, metric)
            if corr is not None:
                out.append(corr)
        return out


@dataclass(frozen=True, slots=True)
class Assignment:
    """A kit's correction of one metric in [start_ms, end_ms)."""

    kit_id: int
    start_ms: int
    end_ms: int
    correction: Correction


def check_day(ms: int, what: str) -> None:
    if ms % DAY_MS:
        msg = f"{what} must be a whole UTC day (midnight), got {ms} ms"
        raise InvalidConfigError(msg)


def plan_periods(start_ms: int, end_ms: int, step_days: int) -> list[tuple[int, int]]:
    """[start, end) in periods of ``step_days`` days; the last one may be shorter."""
    check_day(start_ms, "the start")
    check_day(end_ms, "the end")
    if end_ms <= start_ms:
        msg = "the end must be after the start"
        raise InvalidConfigError(msg)
    if step_days < 1:
        msg = f"the step must be at least one day (got {step_days})"
        raise InvalidConfigError(msg)
    step = step_days * DAY_MS
    return [(s, min(s + step, end_ms)) for s in range(start_ms, end_ms, step)]


def fit_window(period: tuple[int, int], config: FitConfig) -> tuple[int, int]:
    """The window [start, end) a period's corrections are fitted over: ``window_days``
    centred on the period (at least the period itself)."""
    start, end = period
    window = max(config.window_ms, end - start)
    mid = (start + end) // 2
    return mid - window // 2, mid - window // 2 + window


def fit_periods(
    pairs: np.ndarray,
    periods: Sequence[tuple[int, int]],
    *,
    config: FitConfig | None = None,
    kits: Iterable[int] = (),
) -> list[PeriodFit]:
    """Each period's corrections, fitted to the pairs of the window centred on it.

    ``kits`` (those with readings in the range) get the fleet's correction where they
    have too few co-locations of their own, as in :func:`fit_corrections`.
    """
    cfg = config or FitConfig()
    kit_list = sorted({int(k) for k in kits})
    out = []
    for period in periods:
        lo, hi = fit_window(period, cfg)
        # fit_corrections' window is config.window_days before end_ms: give it this one's.
        days = (hi - lo) / DAY_MS
        period_cfg = cfg if days == cfg.window_days else replace(cfg, window_days=days)
        cs = fit_corrections(pairs, end_ms=hi, config=period_cfg, kits=kit_list)
        out.append(PeriodFit(period[0], period[1], cs))
    return out


def apply_periods(
    readings: np.ndarray, assignments: Sequence[Assignment], metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each reading's corrected ``metric``, its uncertainty from the correction and the
    correction's version, by its kit and time; NaN and "" where no assignment covers it
    (or its correction lacks the humidity or temperature it needs).

    ``readings`` needs kit_id, ts_ms and ``metric``; humidity_pct and temperature_c when
    the corrections use them. Assignments of one kit must not overlap.
    """
    names = readings.dtype.names or ()
    for column in ("kit_id", "ts_ms", metric):
        if column not in names:
            msg = f"readings lack the column {column}"
            raise InvalidBatchError(msg)
    values = np.full(len(readings), np.nan)
    unc = np.full(len(readings), np.nan)
    versions = np.full(len(readings), "", dtype=VERSION_DTYPE)
    covered = np.zeros(len(readings), dtype=bool)
    kit_ids = readings["kit_id"].astype(np.int64)
    ts = readings["ts_ms"].astype(np.int64)
    for a in assignments:
        if a.correction.metric != metric:
            msg = f"an assignment of {a.correction.metric} given to correct {metric}"
            raise InvalidBatchError(msg)
        sel = np.flatnonzero((kit_ids == a.kit_id) & (ts >= a.start_ms) & (ts < a.end_ms))
        if len(sel) == 0:
            continue
        if covered[sel].any():
            msg = f"kit {a.kit_id} has overlapping correction periods for {metric}"
            raise InvalidBatchError(msg)
        covered[sel] = True
        rows = readings[sel]
        y, u = apply_correction(
            a.correction,
            rows[metric],
            humidity_pct=rows["humidity_pct"] if "humidity_pct" in names else None,
            temperature_c=rows["temperature_c"] if "temperature_c" in names else None,
        )
        values[sel], unc[sel] = y, u
        versions[sel] = np.where(np.isfinite(y), a.correction.version, "")
    return values, unc, versions
