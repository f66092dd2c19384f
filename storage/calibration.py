"""Calibration stored: what pairing reads, the pairs, the corrections and their periods.

The I/O around the pure core (stream/core/calibration*.py; docs/calibration.md,
"Storage"). :func:`pairing_inputs` reads the stations, their hourly values and the
readings near them; :func:`store_pairs` and :func:`load_pairs` keep the co-locations
(migrations/0110_calibration.sql); :func:`store_fit` writes a fit's corrections and
makes them the ones that apply to its periods, replacing what applied there before.
The corrected aggregates that follow from them are :mod:`storage.corrected_windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import numpy as np
import psycopg

from storage.exceptions import QueryError
from storage.selection import epoch_ms
from stream.core.calibration import (
    API_METRIC_COLUMNS,
    CALIBRATED_METRICS,
    PAIR_DTYPE,
    REFERENCE_DTYPE,
    STATION_DTYPE,
)
from stream.core.calibration_corrections import Correction
from stream.core.calibration_periods import Assignment, PeriodFit
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.policy import DEFAULT_POLICY, PublicationPolicy
from stream.core.resolution import quantise

#: Reading column -> the API's (and the calibration tables') metric name.
METRIC_NAMES = {column: name for name, column in API_METRIC_COLUMNS.items()}

#: Columns pairing and correcting read from ``readings``.
_READING_FIELDS = (
    ("kit_id", "<u4"),
    ("ts_ms", "<i8"),
    ("lat_deg", "<f8"),
    ("lon_deg", "<f8"),
    *((column, "<f8") for column in CALIBRATED_METRICS),
    ("humidity_pct", "<f8"),
    ("temperature_c", "<f8"),
    ("qa_flags", "<u4"),
    ("interval_ms", "<i8"),
)
PAIRING_DTYPE = np.dtype(list(_READING_FIELDS))


def _ms(instant: datetime) -> int:
    return epoch_ms(instant.astimezone(UTC))


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# -- what pairing reads ------------------------------------------------------------

_STATIONS: LiteralString = (
    "SELECT station_id, lat_deg, lon_deg, kind FROM reference_stations ORDER BY station_id"
)
_REFERENCE: LiteralString = """
SELECT station_id, metric, (extract(epoch FROM hour_start) * 1000)::bigint,
       coalesce(value_ugm3, 'NaN'), valid
FROM reference_values
WHERE hour_start >= %s AND hour_start < %s AND metric = ANY(%s)
ORDER BY station_id, metric, hour_start
"""
# Readings near any station: a box around each, then the exact distance in numpy.
_NEAR_READINGS: LiteralString = """
SELECT r.kit_id, (extract(epoch FROM r.ts) * 1000)::bigint, r.lat_deg, r.lon_deg,
       coalesce(r.pm1_ugm3, 'NaN'), coalesce(r.pm25_ugm3, 'NaN'),
       coalesce(r.pm10_ugm3, 'NaN'), coalesce(r.no2_ugm3, 'NaN'),
       coalesce(r.humidity_pct, 'NaN'), coalesce(r.temperature_c, 'NaN'),
       r.qa_flags, r.interval_ms
FROM readings r
WHERE r.ts >= %(start)s AND r.ts < %(end)s
  AND EXISTS (
    SELECT 1 FROM unnest(%(lat)s::float8[], %(lon)s::float8[]) AS s (lat, lon)
    WHERE r.lat_deg BETWEEN s.lat - %(dlat)s AND s.lat + %(dlat)s
      AND r.lon_deg BETWEEN s.lon - %(dlon)s AND s.lon + %(dlon)s)
"""


def _array(rows: Sequence[tuple[Any, ...]], dtype: np.dtype[Any]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=dtype)
    if rows:
        for name, column in zip(dtype.names or (), zip(*rows, strict=True), strict=True):
            out[name] = column
    return out


def load_stations(conn: psycopg.Connection[Any]) -> np.ndarray:
    """Every reference station (``STATION_DTYPE``)."""
    return _array(conn.execute(_STATIONS).fetchall(), STATION_DTYPE)


def load_reference(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, metrics: Sequence[str]
) -> np.ndarray:
    """Hourly values (``REFERENCE_DTYPE``, metrics by their API names) of hours in [start, end)."""
    names = [METRIC_NAMES[m] for m in metrics]
    return _array(conn.execute(_REFERENCE, (start, end, names)).fetchall(), REFERENCE_DTYPE)


def load_near_readings(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    stations: np.ndarray,
    radius_m: float,
) -> np.ndarray:
    """Readings (``PAIRING_DTYPE``) in [start, end) within about ``radius_m`` of a station
    (a box around it; pairing measures the exact distance)."""
    if len(stations) == 0:
        return np.zeros(0, PAIRING_DTYPE)
    dlat = radius_m / 111_000 * 1.1
    coslat = np.cos(np.radians(np.abs(stations["lat_deg"]).max()))
    dlon = dlat / max(float(coslat), 0.01)
    rows = conn.execute(
        _NEAR_READINGS,
        {
            "start": start,
            "end": end,
            "lat": stations["lat_deg"].tolist(),
            "lon": stations["lon_deg"].tolist(),
            "dlat": dlat,
            "dlon": dlon,
        },
    ).fetchall()
    out = _array(rows, PAIRING_DTYPE)
    # Stored as float32: back to the decimals the kit sent (stream.core.resolution).
    for metric, column in METRIC_COLUMNS.items():
        if column in out.dtype.names:  # type: ignore[operator]
            out[column] = quantise(metric, out[column])
    return out


def usable_masks(
    readings: np.ndarray, metrics: Sequence[str], policy: PublicationPolicy = DEFAULT_POLICY
) -> dict[str, np.ndarray]:
    """Per metric, the readings the publication policy lets into the aggregates: pairs are
    made of the readings the map is made of."""
    return {m: policy.publishable(readings, Metric.from_api_name(METRIC_NAMES[m])) for m in metrics}


def earliest_reading(conn: psycopg.Connection[Any]) -> datetime | None:
    """The oldest stored reading's time: hours before it have no readings left to pair."""
    row = conn.execute("SELECT min(ts) FROM readings").fetchone()
    return None if row is None or row[0] is None else row[0].astimezone(UTC)


# -- pairs ---------------------------------------------------------------------------

_PAIR_COLUMNS: LiteralString = (
    "kit_id, station_id, metric, hour_start, kit_mean, n, humidity_mean_pct,"
    " humid_term_mean, temperature_mean_c, distance_mean_m, n_zero, reference_ugm3"
)


@dataclass(frozen=True, slots=True)
class PairsReport:
    deleted: int  # pairs of the re-paired hours stored before
    inserted: int


def store_pairs(
    conn: psycopg.Connection[Any], pairs: np.ndarray, start: datetime, end: datetime
) -> PairsReport:
    """Replace the stored pairs of the hours in [start, end) by ``pairs`` (``PAIR_DTYPE``,
    all in that range), in one transaction. The caller passes a start no earlier than the
    oldest stored reading, so pairs whose readings have expired are kept."""
    if pairs.dtype != PAIR_DTYPE:
        raise QueryError(f"pairs must be PAIR_DTYPE (got {pairs.dtype})")
    lo, hi = _ms(start), _ms(end)
    if len(pairs) and not (
        (pairs["hour_start_ms"] >= lo).all() and (pairs["hour_start_ms"] < hi).all()
    ):
        raise QueryError("pairs outside the range being re-paired")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM calibration_pairs WHERE hour_start >= %s AND hour_start < %s", (start, end)
        )
        deleted = cur.rowcount
        with cur.copy(f"COPY calibration_pairs ({_PAIR_COLUMNS}) FROM STDIN") as copy:
            for p in pairs.tolist():
                kit, station, metric, hour_ms, mean, n, rh, h, temp, dist, n_zero, ref = p
                copy.write_row(
                    (
                        kit,
                        station,
                        METRIC_NAMES[metric],
                        _dt(hour_ms),
                        mean,
                        n,
                        None if np.isnan(rh) else rh,
                        h,
                        None if np.isnan(temp) else temp,
                        dist,
                        n_zero,
                        ref,
                    )
                )
    return PairsReport(deleted=deleted, inserted=len(pairs))


_LOAD_PAIRS: LiteralString = (
    "SELECT kit_id, station_id, metric, (extract(epoch FROM hour_start) * 1000)::bigint,"
    " kit_mean, n, coalesce(humidity_mean_pct, 'NaN'), humid_term_mean,"
    " coalesce(temperature_mean_c, 'NaN'), distance_mean_m, n_zero, reference_ugm3"
    " FROM calibration_pairs WHERE hour_start >= %s AND hour_start < %s"
    " ORDER BY metric, kit_id, station_id, hour_start"
)


def load_pairs(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> np.ndarray:
    """The stored pairs of hours in [start, end) (``PAIR_DTYPE``, metrics as reading columns)."""
    rows = [
        (kit, st, API_METRIC_COLUMNS[metric], *rest)
        for kit, st, metric, *rest in conn.execute(_LOAD_PAIRS, (start, end)).fetchall()
    ]
    return _array(rows, PAIR_DTYPE)


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
        _dt(c.window_start_ms),
        _dt(c.window_end_ms),
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
                        _dt(fit.start_ms),
                        _dt(fit.end_ms),
                        corr.version,
                    )
                )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CALIBRATION_LOCK_KEY,))
        new = 0
        for row in rows.values():
            cur.execute(_INSERT_CORRECTION, row)
            new += cur.rowcount
        cur.execute(_CUT_PERIODS, {"metrics": names, "from": _dt(lo), "to": _dt(hi)})
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
        window_start_ms=_ms(ws),
        window_end_ms=_ms(we),
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
            (_dt(lo), _dt(hi)),
        ).fetchall()
        out[(lo, hi)] = [int(r[0]) for r in rows]
    return out
