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
    ("cell", "<i8"),  # NO_CELL (0) where the reading has none: the map counts it nowhere
)
PAIRING_DTYPE = np.dtype(list(_READING_FIELDS))


def ms_of(instant: datetime) -> int:
    return epoch_ms(instant.astimezone(UTC))


def dt_of(ms: int) -> datetime:
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
       r.qa_flags, r.interval_ms, coalesce(r.cell, 0)
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
    oldest stored reading, so pairs of hours whose readings were partly dropped are not
    re-paired from what is left (:func:`expire_pairs` removes them with the readings)."""
    if pairs.dtype != PAIR_DTYPE:
        raise QueryError(f"pairs must be PAIR_DTYPE (got {pairs.dtype})")
    lo, hi = ms_of(start), ms_of(end)
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
                        dt_of(hour_ms),
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


def expire_pairs(conn: psycopg.Connection[Any], older_than: datetime) -> int:
    """Delete the pairs of hours that ended at or before ``older_than``; returns how many.

    A pair says which kit was near which reference station in which hour: a position of
    a rider at a time, so it goes with the raw readings it was made from (the raw
    retention, docs/privacy.md). The corrections estimated from it stay.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (e.g. datetime.now(UTC) - ...)")
    cur = conn.execute(
        "DELETE FROM calibration_pairs WHERE hour_start + interval '1 hour' <= %s", (older_than,)
    )
    return cur.rowcount


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
