"""Read queries of the API over storage's tables (``storage/migrations/0001_core.sql``).

MARKED FOR STORAGE: these are the API's reads of ``window_partials``,
``window_presence``, ``h3_cells``, ``readings``, ``kits`` and
``rejected_frames``. They live here because the API needed the privacy filter
(k distinct rides *per cell-window*, DESIGN.md decision 4) inside the query,
and a streamed COPY for exports; they belong in ``storage/`` once it offers
them, and the routes call only this module so the move is one import.

Every function takes an open async connection and plain values; none builds
SQL from strings a client sent (values are parameters; the metric column of an
export comes from a fixed table through ``sql.Identifier``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import numpy as np
import psycopg
from psycopg import sql

from stream.core.partials import HIST_BINS, METRIC_COLUMNS, Metric


@dataclass(frozen=True, slots=True)
class BBox:
    west: float
    south: float
    east: float
    north: float


@dataclass(frozen=True, slots=True)
class Selection:
    """Which cell-windows a query merges, and the privacy threshold on each."""

    metric: Metric
    resolution: int
    window_s: int
    start: datetime  # inclusive, aligned to window_s
    end: datetime  # exclusive, aligned to window_s
    min_rides: int  # k: cell-windows with fewer distinct rides are left out
    min_days: int = 1  # over the range, per cell


#: Merged partials per cell (or per bucket), as the routes consume them.
AGG_DTYPE = np.dtype([
    ("key", "<i8"),  # cell, or bucket start in epoch seconds
    ("n", "<i8"), ("sum", "<f8"), ("sumsq", "<f8"), ("min", "<f8"), ("max", "<f8"),
    ("energy", "<f8"), ("duration_s", "<f8"), ("lamax_db", "<f8"),
    ("rides", "<i8"), ("days", "<i8"),
    ("hist", "<i8", (HIST_BINS,)),
])

# The cell-windows that pass the privacy threshold. ``{cells}`` narrows to the
# cells of interest (a bbox through h3_cells, or one cell).
_PASSING: LiteralString = """
passing AS (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.cell, pr.window_start
    HAVING count(DISTINCT pr.ride_id) >= %(k)s
)"""

_WANTED_BBOX: LiteralString = """
wanted AS (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND lon_deg BETWEEN %(west)s AND %(east)s
)"""

_WANTED_CELL: LiteralString = "wanted AS (SELECT %(cell)s::bigint AS cell)"


def _params(sel: Selection, bbox: BBox | None, cell: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "metric": int(sel.metric), "res": sel.resolution, "window_s": sel.window_s,
        "start": sel.start, "end": sel.end, "k": sel.min_rides, "min_days": sel.min_days,
    }
    if bbox is not None:
        params.update(west=bbox.west, south=bbox.south, east=bbox.east, north=bbox.north)
    if cell is not None:
        params["cell"] = cell
    return params


async def cell_means(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
                     ) -> np.ndarray:
    """For tiles: per cell in ``bbox``, count, Σx, noise energy and duration, rides, days."""
    query: LiteralString = "WITH " + _WANTED_BBOX + "," + _PASSING + """,
    agg AS (
        SELECT p.cell, sum(p.n) AS n, sum(p.sum) AS s,
               sum(p.energy) AS e, sum(p.duration_s) AS d
        FROM window_partials p JOIN passing USING (cell, window_start)
        WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
          AND p.window_start >= %(start)s AND p.window_start < %(end)s
        GROUP BY p.cell
    ),
    pres AS (
        SELECT pr.cell, count(DISTINCT pr.ride_id) AS rides, count(DISTINCT pr.day) AS days
        FROM window_presence pr JOIN passing USING (cell, window_start)
        WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
          AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
        GROUP BY pr.cell
    )
    SELECT agg.cell, agg.n, agg.s, agg.e, agg.d, pres.rides, pres.days
    FROM agg JOIN pres USING (cell)
    WHERE pres.days >= %(min_days)s
    """
    cur = await conn.execute(query, _params(sel, bbox, None))
    rows = await cur.fetchall()
    out = np.zeros(len(rows), dtype=[("cell", "<i8"), ("n", "<i8"), ("sum", "<f8"),
                                     ("energy", "<f8"), ("duration_s", "<f8"),
                                     ("rides", "<i8"), ("days", "<i8")])
    if rows:
        cols = list(zip(*rows, strict=True))
        for name, col in zip(out.dtype.names or (), cols, strict=True):
            out[name] = np.array(col, dtype=np.float64 if name in {"sum", "energy",
                                                                   "duration_s"} else np.int64)
    return out


_AGG_SELECT: LiteralString = """
        sum(p.n) AS n, sum(p.sum) AS s, sum(p.sumsq) AS ss, min(p.min) AS mn, max(p.max) AS mx,
        sum(p.energy) AS e, sum(p.duration_s) AS d, max(p.lamax_db) AS lamax,
        bikesense_hist_sum(p.hist) AS h"""


def _to_agg(rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=AGG_DTYPE)
    for i, (key, n, s, ss, mn, mx, e, d, lamax, hist, rides, days) in enumerate(rows):
        out[i] = (key, n, s, ss, mn, mx, e, d, np.nan if lamax is None else lamax,
                  rides, days, hist if hist is not None else np.zeros(HIST_BINS))
    return out


async def cell_stats(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
                     ) -> np.ndarray:
    """Per cell in ``bbox``: merged partials of the passing cell-windows (:data:`AGG_DTYPE`)."""
    query: LiteralString = "WITH " + _WANTED_BBOX + "," + _PASSING + """,
    agg AS (
        SELECT p.cell, """ + _AGG_SELECT + """
        FROM window_partials p JOIN passing USING (cell, window_start)
        WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
          AND p.window_start >= %(start)s AND p.window_start < %(end)s
        GROUP BY p.cell
    ),
    pres AS (
        SELECT pr.cell, count(DISTINCT pr.ride_id) AS rides, count(DISTINCT pr.day) AS days
        FROM window_presence pr JOIN passing USING (cell, window_start)
        WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
          AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
        GROUP BY pr.cell
    )
    SELECT agg.*, pres.rides, pres.days
    FROM agg JOIN pres USING (cell)
    WHERE pres.days >= %(min_days)s
    ORDER BY agg.cell
    """
    cur = await conn.execute(query, _params(sel, bbox, None))
    return _to_agg(await cur.fetchall())


async def bucket_stats(conn: psycopg.AsyncConnection[Any], sel: Selection, bucket_s: int, *,
                       bbox: BBox | None = None, cell: int | None = None) -> np.ndarray:
    """Per time bucket (key = bucket start, epoch s): merged partials over one cell or a bbox."""
    if (bbox is None) == (cell is None):
        msg = "give exactly one of bbox and cell"
        raise ValueError(msg)
    wanted = _WANTED_BBOX if bbox is not None else _WANTED_CELL
    query: LiteralString = "WITH " + wanted + "," + _PASSING + """,
    agg AS (
        SELECT (floor(extract(epoch FROM p.window_start) / %(bucket_s)s) * %(bucket_s)s)::bigint
               AS bucket, """ + _AGG_SELECT + """
        FROM window_partials p JOIN passing USING (cell, window_start)
        WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
          AND p.window_start >= %(start)s AND p.window_start < %(end)s
        GROUP BY 1
    ),
    pres AS (
        SELECT (floor(extract(epoch FROM pr.window_start) / %(bucket_s)s) * %(bucket_s)s)::bigint
               AS bucket, count(DISTINCT pr.ride_id) AS rides, count(DISTINCT pr.day) AS days
        FROM window_presence pr JOIN passing USING (cell, window_start)
        WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
          AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
        GROUP BY 1
    )
    SELECT agg.*, pres.rides, pres.days
    FROM agg JOIN pres USING (bucket)
    ORDER BY agg.bucket
    """
    params = _params(sel, bbox, cell)
    params["bucket_s"] = bucket_s
    cur = await conn.execute(query, params)
    return _to_agg(await cur.fetchall())


# ---------------------------------------------------------------- raw readings


@dataclass(frozen=True, slots=True)
class ExportColumn:
    name: str  # with its unit in the name, as in the readings table
    unit: str
    sql: LiteralString  # expression over table alias r
    arrow: str  # pyarrow type name
    metric: Metric | None = None  # only with this metric asked for


_ISO_TS: LiteralString = """to_char(r.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
_ISO_RECEIVED: LiteralString = (
    """to_char(r.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""")

#: The export's columns, in their stable order.
EXPORT_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601 UTC", _ISO_TS, "timestamp"),
    ExportColumn("kit_id", "", "r.kit_id", "int64"),
    ExportColumn("boot_id", "", "r.boot_id", "int64"),
    ExportColumn("seq", "", "r.seq", "int64"),
    ExportColumn("idx", "", "r.idx", "int32"),
    ExportColumn("ride_id", "", "r.ride_id", "int64"),
    ExportColumn("lat_deg", "degree WGS84", "r.lat_deg", "float64"),
    ExportColumn("lon_deg", "degree WGS84", "r.lon_deg", "float64"),
    ExportColumn("gnss_fix", "0 none, 1 2-D, 2 3-D", "r.gnss_fix", "int16"),
    ExportColumn("hdop", "", "r.hdop", "float32"),
    ExportColumn("satellites", "count", "r.satellites", "int16"),
    ExportColumn("speed_mps", "m/s", "r.speed_mps", "float32"),
    ExportColumn("pm1_ugm3", "µg/m³", "r.pm1_ugm3", "float32", Metric.PM1),
    ExportColumn("pm25_ugm3", "µg/m³", "r.pm25_ugm3", "float32", Metric.PM25),
    ExportColumn("pm10_ugm3", "µg/m³", "r.pm10_ugm3", "float32", Metric.PM10),
    ExportColumn("no2_ugm3", "µg/m³", "r.no2_ugm3", "float32", Metric.NO2),
    ExportColumn("noise_laeq_db", "dB(A)", "r.noise_laeq_db", "float32", Metric.NOISE),
    ExportColumn("noise_lamax_db", "dB(A)", "r.noise_lamax_db", "float32", Metric.NOISE),
    ExportColumn("temperature_c", "°C", "r.temperature_c", "float32", Metric.TEMPERATURE),
    ExportColumn("humidity_pct", "%", "r.humidity_pct", "float32", Metric.HUMIDITY),
    ExportColumn("interval_ms", "ms", "r.interval_ms", "int64"),
    ExportColumn("status", "bits", "r.status", "int32"),
    ExportColumn("qa_flags", "bits, stream.core.qa.QaFlag", "r.qa_flags", "int64"),
    ExportColumn("cell", "H3 index", "lpad(to_hex(r.cell), 15, '0')", "string"),
    ExportColumn("received_at", "ISO 8601 UTC", _ISO_RECEIVED, "timestamp"),
)

assert {c.name for c in EXPORT_COLUMNS if c.metric} == {
    *METRIC_COLUMNS.values(), "noise_lamax_db"}


def export_columns(metrics: Sequence[Metric]) -> tuple[ExportColumn, ...]:
    wanted = set(metrics)
    return tuple(c for c in EXPORT_COLUMNS if c.metric is None or c.metric in wanted)


def _export_query(columns: Sequence[ExportColumn], *, start: datetime, end: datetime,
                  bbox: BBox | None, kits: Sequence[int], metrics: Sequence[Metric],
                  geojson: bool) -> sql.Composed:
    # COPY takes no parameters, so values are bound as literals by psycopg.
    lit = sql.Literal
    where: list[sql.Composable] = [
        sql.SQL("r.ts >= {} AND r.ts < {}").format(lit(start), lit(end))]
    if bbox is not None:
        where.append(sql.SQL("r.lat_deg BETWEEN {} AND {} AND r.lon_deg BETWEEN {} AND {}").format(
            lit(bbox.south), lit(bbox.north), lit(bbox.west), lit(bbox.east)))
    if kits:
        where.append(sql.SQL("r.kit_id = ANY({}::bigint[])").format(lit(list(kits))))
    if metrics and len(metrics) < len(Metric):
        where.append(sql.SQL("(") + sql.SQL(" OR ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier("r", METRIC_COLUMNS[m]))
            for m in metrics) + sql.SQL(")"))
    if geojson:
        props = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c.name), sql.SQL(c.sql)) for c in columns)
        select = sql.SQL(
            "json_build_object('type', 'Feature', 'geometry', "
            "CASE WHEN r.lat_deg IS NULL THEN NULL ELSE json_build_object('type', 'Point', "
            "'coordinates', json_build_array(r.lon_deg, r.lat_deg)) END, "
            "'properties', json_build_object({}))::text").format(props)
    else:
        select = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.SQL(c.sql), sql.Identifier(c.name)) for c in columns)
    return sql.SQL(
        "SELECT {} FROM readings r WHERE {} ORDER BY r.ts, r.kit_id, r.boot_id, r.seq, r.idx"
    ).format(select, sql.SQL(" AND ").join(where))


async def copy_readings(conn: psycopg.AsyncConnection[Any], columns: Sequence[ExportColumn], *,
                        start: datetime, end: datetime, bbox: BBox | None, kits: Sequence[int],
                        metrics: Sequence[Metric], fmt: str) -> AsyncIterator[bytes]:
    """Raw readings as the server's COPY output, chunk by chunk (constant memory).

    ``fmt`` ``csv`` gives CSV rows without header; ``geojson`` one Feature
    object per line. Timestamps are written in UTC (the session's TimeZone).
    The server streams COPY output as it produces rows, and psycopg hands
    over each network chunk, so memory stays flat whatever the row count.
    """
    query = _export_query(columns, start=start, end=end, bbox=bbox, kits=kits,
                          metrics=metrics, geojson=fmt == "geojson")
    options = sql.SQL("(FORMAT csv)") if fmt == "csv" else sql.SQL("(FORMAT text)")
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET LOCAL TimeZone = 'UTC'")
        async with cur.copy(sql.SQL("COPY ({}) TO STDOUT {}").format(query, options)) as copy:
            async for chunk in copy:
                yield bytes(chunk)


# ------------------------------------------------------------------------- kits


FleetRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[int, tuple[int, int]]]


async def fleet(conn: psycopg.AsyncConnection[Any], since: datetime) -> FleetRows:
    """Kits, rejected frames by (kit, reason) since ``since``, and (frames, readings) per kit."""
    cur = await conn.execute(
        "SELECT kit_id, pseudonym, status, last_seen_at, battery_pct, firmware_version "
        "FROM kits ORDER BY kit_id")
    kits = await cur.fetchall()
    cur = await conn.execute(
        "SELECT kit_id, reason, count(*) FROM rejected_frames WHERE received_at >= %s "
        "GROUP BY kit_id, reason ORDER BY kit_id, reason", (since,))
    rejects = await cur.fetchall()
    cur = await conn.execute(
        "SELECT kit_id, count(DISTINCT (boot_id, seq)), count(*) FROM readings "
        "WHERE received_at >= %s AND ts >= %s - interval '7 days' GROUP BY kit_id", (since, since))
    accepted = {int(k): (int(f), int(n)) for k, f, n in await cur.fetchall()}
    return kits, rejects, accepted
