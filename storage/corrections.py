"""Corrections stored: each estimate once, and which one applies to which kit's readings when.

``calibration_corrections`` holds every estimate (a
:class:`~stream.core.calibration_corrections.Correction`) once, by version;
``calibration_periods`` says which one applies to a kit's readings of a metric in a
valid period of whole UTC days (migrations/0110_calibration.sql). :func:`store_fit`
writes a fit's corrections and makes them the ones in force over its range, replacing
what applied there before (the replaced estimates stay, no longer in force);
:func:`load_assignments` reads them back to correct readings
(:mod:`storage.corrected_apply`); :func:`list_corrections` serves
``bikesense calibration list``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg

from storage.calibration import METRIC_NAMES, dt_of, ms_of
from stream.core.calibration import API_METRIC_COLUMNS
from stream.core.calibration_corrections import Correction
from stream.core.calibration_periods import Assignment, PeriodFit

# -- corrections and their periods --------------------------------------------------

_CORRECTION_COLUMNS: LiteralString = (
    "version, metric, kit_id, source, offset_ugm3, gain, humid_gain, temp_coeff, covariance,"
    " terms, n_pairs, kit_pairs, window_start, window_end, residual_sd, humid_rh_pct,"
    " temperature_ref_c, note"
)
_INSERT_CORRECTION: LiteralString = (
    "INSERT INTO calibration_corrections ("
    + _CORRECTION_COLUMNS
    + ") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (version, kit_id) DO NOTHING"
)
# A new fit over [from, to) replaces the periods there: those inside go, those reaching
# out are cut at its edges (the part outside keeps its correction).
_CUT_PERIODS: LiteralString = """
WITH old AS (
    DELETE FROM calibration_periods
    WHERE metric = ANY(%(metrics)s) AND valid_from < %(to)s AND valid_to > %(from)s
    RETURNING metric, kit_id, valid_from, valid_to, version)
INSERT INTO calibration_periods (metric, kit_id, valid_from, valid_to, version)
SELECT metric, kit_id, valid_from, %(from)s, version FROM old WHERE valid_from < %(from)s
UNION ALL
SELECT metric, kit_id, %(to)s, valid_to, version FROM old WHERE valid_to > %(to)s
"""
_INSERT_PERIOD: LiteralString = (
    "INSERT INTO calibration_periods (metric, kit_id, valid_from, valid_to, version)"
    " VALUES (%s, %s, %s, %s, %s)"
)
#: Serialises fits (and the applications that read their periods).
CALIBRATION_LOCK_KEY = 7291436020


def _correction_row(c: Correction) -> tuple[Any, ...]:
    return (
        c.version,
        METRIC_NAMES[c.metric],
        c.kit_id,
        c.source,
        *c.params,
        [v for row in c.covariance for v in row],
        list(c.terms),
        c.n_pairs,
        c.kit_pairs,
        dt_of(c.window_start_ms),
        dt_of(c.window_end_ms),
        c.residual_sd,
        c.humid_rh_pct,
        c.temperature_ref_c,
        c.note,
    )


@dataclass(frozen=True, slots=True)
class FitReport:
    corrections: int  # corrections the fit holds (the fleet's and each kit's)
    new_corrections: int  # of those, not stored before
    periods: int  # (kit, metric, period) rows now applying


def store_fit(
    conn: psycopg.Connection[Any],
    fits: Sequence[PeriodFit],
    kits: dict[tuple[int, int], list[int]],
    metrics: Sequence[str],
) -> FitReport:
    """Store every correction of ``fits`` and make it apply to its period: for each period
    and metric, the kits ``kits[(start_ms, end_ms)]`` (those with readings there) get their
    own correction or the fleet's. Whatever applied to ``metrics`` in the fits' range before
    is replaced there. One transaction."""
    if not fits:
        return FitReport(0, 0, 0)
    names = [METRIC_NAMES[m] for m in metrics]
    lo = min(f.start_ms for f in fits)
    hi = max(f.end_ms for f in fits)
    rows: dict[tuple[str, int | None], tuple[Any, ...]] = {}
    periods: list[tuple[Any, ...]] = []
    for fit in fits:
        for metric in metrics:
            fleet = fit.corrections.fleet.get(metric)
            if fleet is not None:
                rows[(fleet.version, None)] = _correction_row(fleet)
            for corr in fit.for_kits(kits.get((fit.start_ms, fit.end_ms), []), metric):
                rows[(corr.version, corr.kit_id)] = _correction_row(corr)
                periods.append(
                    (
                        METRIC_NAMES[metric],
                        corr.kit_id,
                        dt_of(fit.start_ms),
                        dt_of(fit.end_ms),
                        corr.version,
                    )
                )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CALIBRATION_LOCK_KEY,))
        new = 0
        for row in rows.values():
            cur.execute(_INSERT_CORRECTION, row)
            new += cur.rowcount
        cur.execute(_CUT_PERIODS, {"metrics": names, "from": dt_of(lo), "to": dt_of(hi)})
        cur.executemany(_INSERT_PERIOD, periods)
    return FitReport(corrections=len(rows), new_corrections=new, periods=len(periods))


_LOAD_ASSIGNMENTS: LiteralString = (
    "SELECT p.kit_id, (extract(epoch FROM greatest(p.valid_from, %(from)s)) * 1000)::bigint,"
    " (extract(epoch FROM least(p.valid_to, %(to)s)) * 1000)::bigint, "
    + ", ".join(f"c.{c.strip()}" for c in _CORRECTION_COLUMNS.split(","))
    + " FROM calibration_periods p"
    " JOIN calibration_corrections c ON c.version = p.version AND c.kit_id = p.kit_id"
    " WHERE p.metric = %(metric)s AND p.valid_from < %(to)s AND p.valid_to > %(from)s"
    " ORDER BY p.kit_id, p.valid_from"
)


def _correction(row: Sequence[Any]) -> Correction:
    (version, metric, kit_id, source, o, g, q, c, cov, terms, n_pairs, kit_pairs, ws, we, sd) = row[
        :15
    ]
    humid_rh, temp_ref, note = row[15:18]
    return Correction(
        metric=API_METRIC_COLUMNS[metric],
        kit_id=kit_id,
        source=source,
        params=(o, g, q, c),
        covariance=tuple(tuple(cov[i * 4 : i * 4 + 4]) for i in range(4)),
        terms=tuple(terms),
        n_pairs=n_pairs,
        kit_pairs=kit_pairs,
        window_start_ms=ms_of(ws),
        window_end_ms=ms_of(we),
        residual_sd=sd,
        humid_rh_pct=humid_rh,
        temperature_ref_c=temp_ref,
        version=version,
        note=note,
    )


def load_assignments(
    conn: psycopg.Connection[Any], metric: str, start: datetime, end: datetime
) -> list[Assignment]:
    """The corrections that apply to readings of ``metric`` (a reading column) in
    [start, end), each kit's periods cut to that range."""
    rows = conn.execute(
        _LOAD_ASSIGNMENTS, {"metric": METRIC_NAMES[metric], "from": start, "to": end}
    ).fetchall()
    return [Assignment(row[0], row[1], row[2], _correction(row[3:])) for row in rows]


async def aload_assignments(
    conn: psycopg.AsyncConnection[Any], metric: str, start: datetime, end: datetime
) -> list[Assignment]:
    """:func:`load_assignments` on an async connection (the exports')."""
    cur = await conn.execute(
        _LOAD_ASSIGNMENTS, {"metric": METRIC_NAMES[metric], "from": start, "to": end}
    )
    rows = await cur.fetchall()
    return [Assignment(row[0], row[1], row[2], _correction(row[3:])) for row in rows]


@dataclass(frozen=True, slots=True)
class StoredCorrection:
    correction: Correction
    valid_from: datetime | None  # None: the fleet's own, which applies through kits' rows
    valid_to: datetime | None
    fitted_at: datetime


_LIST: LiteralString = (
    "SELECT p.valid_from, p.valid_to, c.fitted_at, "
    + ", ".join(f"c.{c.strip()}" for c in _CORRECTION_COLUMNS.split(","))
    + " FROM calibration_corrections c"
    " LEFT JOIN calibration_periods p ON p.version = c.version AND p.kit_id = c.kit_id"
    " WHERE (p.valid_from IS NOT NULL OR c.kit_id IS NULL OR %(all)s)"
    " AND (%(metric)s::text IS NULL OR c.metric = %(metric)s)"
    " ORDER BY c.metric, p.valid_from NULLS FIRST, c.kit_id NULLS FIRST, c.fitted_at"
)


def list_corrections(
    conn: psycopg.Connection[Any], *, metric: str | None = None, include_replaced: bool = False
) -> list[StoredCorrection]:
    """The corrections that apply now (with their periods) and the fleet's; with
    ``include_replaced`` also those no period uses any more. ``metric`` by its API name."""
    rows = conn.execute(_LIST, {"metric": metric, "all": include_replaced}).fetchall()
    return [
        StoredCorrection(
            correction=_correction(row[3:]),
            valid_from=row[0].astimezone(UTC) if row[0] else None,
            valid_to=row[1].astimezone(UTC) if row[1] else None,
            fitted_at=row[2].astimezone(UTC),
        )
        for row in rows
    ]


def kits_with_readings(
    conn: psycopg.Connection[Any], periods: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], list[int]]:
    """Per period, the kits with readings in it."""
    out = {}
    for lo, hi in periods:
        rows = conn.execute(
            "SELECT DISTINCT kit_id FROM readings WHERE ts >= %s AND ts < %s ORDER BY kit_id",
            (dt_of(lo), dt_of(hi)),
        ).fetchall()
        out[(lo, hi)] = [int(r[0]) for r in rows]
    return out
