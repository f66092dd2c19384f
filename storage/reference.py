"""Hourly values of official reference stations, stored and read back.

:func:`store_reference` writes a parsed file (:mod:`storage.reference_formats`) in one
transaction: a file that fails imports nothing, and importing an hour again replaces
its value, so re-importing a file changes nothing. The readers serve
``bikesense reference list`` and the API (docs/reference-data.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg

from storage.exceptions import QueryError
from storage.reference_file import ReferenceFile, Station
from stream.core.partials import Metric

# -- storing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    stations: int  # stations in the file
    inserted: int  # hours new to the database
    updated: int  # hours stored before with another value or validity
    unchanged: int  # hours stored before exactly so


_UPSERT_STATIONS: LiteralString = """
INSERT INTO reference_stations AS s (station_id, name, lat_deg, lon_deg)
VALUES (%s, %s, %s, %s)
ON CONFLICT (station_id) DO UPDATE
SET name = EXCLUDED.name, lat_deg = EXCLUDED.lat_deg, lon_deg = EXCLUDED.lon_deg,
    updated_at = now()
WHERE (s.name, s.lat_deg, s.lon_deg) IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.lat_deg, EXCLUDED.lon_deg)
"""
_STAGING: LiteralString = """
CREATE TEMPORARY TABLE reference_staging (
    station_id text NOT NULL, metric text NOT NULL, hour_start timestamptz NOT NULL,
    value_ugm3 double precision, valid boolean NOT NULL
) ON COMMIT DROP
"""
# In key order, so that two imports of overlapping files lock rows in the same order.
_UPSERT_VALUES: LiteralString = """
INSERT INTO reference_values AS r (station_id, metric, hour_start, value_ugm3, valid, source)
SELECT station_id, metric, hour_start, value_ugm3, valid, %s FROM reference_staging
ORDER BY station_id, metric, hour_start
ON CONFLICT (station_id, metric, hour_start) DO UPDATE
SET value_ugm3 = EXCLUDED.value_ugm3, valid = EXCLUDED.valid, source = EXCLUDED.source,
    imported_at = now()
WHERE (r.value_ugm3, r.valid) IS DISTINCT FROM (EXCLUDED.value_ugm3, EXCLUDED.valid)
RETURNING xmax = 0
"""


def store_reference(conn: psycopg.Connection[Any], ref: ReferenceFile) -> ImportReport:
    """Store a parsed file in one transaction (a savepoint inside the caller's): its
    stations (name and position replaced by the file's) and its values (an hour stored
    before takes the file's value and validity). All or nothing."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            _UPSERT_STATIONS, [(s.station_id, s.name, s.lat_deg, s.lon_deg) for s in ref.stations]
        )
        cur.execute("DROP TABLE IF EXISTS pg_temp.reference_staging")
        cur.execute(_STAGING)
        with cur.copy(
            "COPY reference_staging (station_id, metric, hour_start, value_ugm3, valid) FROM STDIN"
        ) as copy:
            for v in ref.values:
                copy.write_row(
                    (v.station_id, v.metric.api_name, v.hour_start, v.value_ugm3, v.valid)
                )
        cur.execute(_UPSERT_VALUES, (str(ref.format),))
        new = [bool(row[0]) for row in cur.fetchall()]
        cur.execute("DROP TABLE reference_staging")
    inserted = sum(new)
    updated = len(new) - inserted
    return ImportReport(
        stations=len(ref.stations),
        inserted=inserted,
        updated=updated,
        unchanged=len(ref.values) - inserted - updated,
    )


#: A station's kind (migrations/0110_calibration.sql): stream.core.calibration.STATION_KINDS.
STATION_KINDS = ("traffic", "industrial", "background", "")


def set_station_kind(conn: psycopg.Connection[Any], station_id: str, kind: str) -> None:
    """Record a station's EU kind ("" for unknown), which sets its pairing distance
    (docs/calibration.md, "The distance")."""
    if kind not in STATION_KINDS:
        raise QueryError(
            f"station kind must be traffic, industrial, background or empty (got {kind!r})"
        )
    cur = conn.execute(
        "UPDATE reference_stations SET kind = %s, updated_at = now() WHERE station_id = %s",
        (kind, station_id),
    )
    if cur.rowcount == 0:
        raise QueryError(f"no reference station {station_id!r}: import its data first")


# -- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """The hours of one metric a station has."""

    metric: Metric
    first_hour: datetime
    last_hour: datetime  # the start of the last hour
    hours: int
    valid_hours: int


@dataclass(frozen=True, slots=True)
class StationSummary:
    station: Station
    coverage: tuple[Coverage, ...]  # by metric


@dataclass(frozen=True, slots=True)
class HourValue:
    hour_start: datetime
    value_ugm3: float | None
    valid: bool


_SUMMARY: LiteralString = """
SELECT s.station_id, s.name, s.lat_deg, s.lon_deg, v.metric,
       v.first_hour, v.last_hour, v.hours, v.valid_hours
FROM reference_stations s
LEFT JOIN (
    SELECT station_id, metric, min(hour_start) AS first_hour, max(hour_start) AS last_hour,
           count(*) AS hours, count(*) FILTER (WHERE valid) AS valid_hours
    FROM reference_values GROUP BY station_id, metric
) v USING (station_id)
ORDER BY s.station_id, v.metric
"""
_STATION: LiteralString = (
    "SELECT station_id, name, lat_deg, lon_deg FROM reference_stations WHERE station_id = %s"
)
_VALUES: LiteralString = """
SELECT hour_start, value_ugm3, valid FROM reference_values
WHERE station_id = %s AND metric = %s AND hour_start >= %s AND hour_start < %s
ORDER BY hour_start
"""


def _summaries(rows: Iterable[tuple[Any, ...]]) -> list[StationSummary]:
    stations: dict[str, tuple[Station, list[Coverage]]] = {}
    for station_id, name, lat, lon, metric, first, last, hours, valid_hours in rows:
        entry = stations.setdefault(station_id, (Station(station_id, name, lat, lon), []))
        if metric is not None:
            entry[1].append(
                Coverage(
                    Metric.from_api_name(metric),
                    first.astimezone(UTC),
                    last.astimezone(UTC),
                    int(hours),
                    int(valid_hours),
                )
            )
    return [
        StationSummary(station, tuple(sorted(coverage, key=lambda c: c.metric)))
        for station, coverage in stations.values()
    ]


def _hour_values(rows: Iterable[tuple[Any, ...]]) -> list[HourValue]:
    return [HourValue(hour.astimezone(UTC), value, valid) for hour, value, valid in rows]


def station_summaries(conn: psycopg.Connection[Any]) -> list[StationSummary]:
    """Every station with, per metric, its first and last hour and how many it has."""
    return _summaries(conn.execute(_SUMMARY).fetchall())


async def astation_summaries(conn: psycopg.AsyncConnection[Any]) -> list[StationSummary]:
    cur = await conn.execute(_SUMMARY)
    return _summaries(await cur.fetchall())


async def aget_station(conn: psycopg.AsyncConnection[Any], station_id: str) -> Station | None:
    cur = await conn.execute(_STATION, (station_id,))
    row = await cur.fetchone()
    return Station(*row) if row else None


def reference_values(
    conn: psycopg.Connection[Any], station_id: str, metric: Metric, start: datetime, end: datetime
) -> list[HourValue]:
    """One station's hours of ``metric`` starting in ``[start, end)``, in time order."""
    return _hour_values(conn.execute(_VALUES, (station_id, metric.api_name, start, end)))


async def areference_values(
    conn: psycopg.AsyncConnection[Any],
    station_id: str,
    metric: Metric,
    start: datetime,
    end: datetime,
) -> list[HourValue]:
    cur = await conn.execute(_VALUES, (station_id, metric.api_name, start, end))
    return _hour_values(await cur.fetchall())
