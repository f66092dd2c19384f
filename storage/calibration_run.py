"""One calibration run over a range of days: pair, fit, store, and correct the aggregates.

What ``bikesense calibration fit`` does (docs/calibration.md, "Storage"), callable
without the command line:

1. the range [start, end) of whole UTC days is cut into valid periods of
   ``step_days`` (:func:`stream.core.calibration_periods.plan_periods`), each fitted
   over the window centred on it;
2. the hours those windows span are paired again where their raw readings are still
   stored (readings near a station, the stations' hourly values, the publication
   policy's readings: :func:`stream.core.calibration.colocate`) and their pairs
   replaced; older pairs stay as they were;
3. every period's corrections are fitted to the stored pairs of its window and stored,
   applying to the kits with readings in the period (their own, or the fleet's);
4. the corrected aggregates of the days whose corrections changed are made again
   (:func:`storage.corrected_apply.apply_range`).

Fitting the same data again stores nothing new and re-computes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from storage.calibration import (
    PairsReport,
    earliest_reading,
    load_near_readings,
    load_pairs,
    load_reference,
    load_stations,
    store_pairs,
    usable_masks,
)
from storage.corrected_apply import ApplyReport, apply_range
from storage.corrections import FitReport, kits_with_readings, store_fit
from storage.exceptions import QueryError
from storage.selection import epoch_ms
from stream.core.calibration import CALIBRATED_METRICS, HOUR_MS, PairingConfig, colocate
from stream.core.calibration_fit import FitConfig
from stream.core.calibration_periods import fit_periods, fit_window, plan_periods


@dataclass(frozen=True, slots=True)
class RunReport:
    periods: list[tuple[date, date]]
    paired_from: datetime | None  # hours re-paired from here (None: no readings left)
    paired_to: datetime
    pairs: PairsReport
    fit: FitReport
    applied: ApplyReport | None


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def data_days(conn: psycopg.Connection[Any]) -> tuple[date, date] | None:
    """The UTC days [first, last + 1) of the stored readings, or None without any."""
    row = conn.execute("SELECT min(ts), max(ts) FROM readings").fetchone()
    if row is None or row[0] is None:
        return None
    return row[0].astimezone(UTC).date(), row[1].astimezone(UTC).date() + timedelta(days=1)


def run_fit(
    conn: psycopg.Connection[Any],
    start: date,
    end: date,
    *,
    resolutions: Sequence[int],
    window_sizes_s: Sequence[int],
    step_days: int = 7,
    pairing: PairingConfig | None = None,
    fit: FitConfig | None = None,
    metrics: Sequence[str] = CALIBRATED_METRICS,
    apply: bool = True,
) -> RunReport:
    """Pair, fit and store the corrections of [start, end), then correct its aggregates."""
    pcfg = pairing or PairingConfig()
    fcfg = fit or FitConfig()
    if fcfg.humid_rh_pct != pcfg.humid_rh_pct:
        raise QueryError("the fit's humid_rh_pct must be the pairing's: h(RH) is computed there")
    lo_ms = epoch_ms(datetime(start.year, start.month, start.day, tzinfo=UTC))
    hi_ms = epoch_ms(datetime(end.year, end.month, end.day, tzinfo=UTC))
    try:
        periods = plan_periods(lo_ms, hi_ms, step_days)
    except ValueError as exc:  # InvalidConfigError is a ValueError too
        raise QueryError(str(exc)) from exc
    windows = [fit_window(p, fcfg) for p in periods]
    pair_lo, pair_hi = min(w[0] for w in windows), max(w[1] for w in windows)
    # Whole hours: pairs are per clock hour.
    pair_lo, pair_hi = pair_lo // HOUR_MS * HOUR_MS, -(-pair_hi // HOUR_MS) * HOUR_MS

    stations = load_stations(conn)
    if len(stations) == 0:
        raise QueryError("no reference stations stored: `bikesense reference import FILE` first")
    oldest = earliest_reading(conn)
    repair_lo = pair_lo if oldest is None else max(pair_lo, epoch_ms(oldest) // HOUR_MS * HOUR_MS)
    if oldest is not None and repair_lo < pair_hi:
        radius = max(pcfg.max_distance_m, pcfg.traffic_max_distance_m)
        readings = load_near_readings(conn, _at(repair_lo), _at(pair_hi), stations, radius)
        reference = load_reference(conn, _at(repair_lo), _at(pair_hi), metrics)
        pairs = colocate(
            readings,
            stations,
            reference,
            metrics=metrics,
            config=pcfg,
            usable=usable_masks(readings, metrics),
        )
        pairs_report = store_pairs(conn, pairs, _at(repair_lo), _at(pair_hi))
        paired_from: datetime | None = _at(repair_lo)
    else:
        pairs_report = PairsReport(0, 0)
        paired_from = None
    stored = load_pairs(conn, _at(pair_lo), _at(pair_hi))
    kits = kits_with_readings(conn, periods)
    fits = fit_periods(stored, periods, config=fcfg, kits={k for ks in kits.values() for k in ks})
    fit_report = store_fit(conn, fits, kits, metrics)
    applied = (
        apply_range(conn, start, end, resolutions=resolutions, window_sizes_s=window_sizes_s)
        if apply
        else None
    )
    return RunReport(
        periods=[(_day(a), _day(b)) for a, b in periods],
        paired_from=paired_from,
        paired_to=_at(pair_hi),
        pairs=pairs_report,
        fit=fit_report,
        applied=applied,
    )
