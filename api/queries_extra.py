"""Reads the API needs that ``storage.queries`` does not offer (yet).

MARKED FOR STORAGE: three queries live here, written against storage's tables
(``storage/migrations/0001_core.sql``); they belong in ``storage/`` and the
routes call only this module for them, so the move is one import.

* :func:`cell_means` — the tile path. ``storage.queries.acell_stats`` merges
  histograms (``bikesense_hist_sum``), counts distinct rides and days per cell
  and derives percentiles; a tile needs only count, Σx (or noise energy and
  duration) under the same privacy filter, and must answer in a few
  milliseconds: 30 days of a town took seconds per tile through the full
  statistics (bench/bench_tiles.py).
* :func:`copy_readings_text` — raw readings as the database's CSV / JSON text,
  for the CSV and GeoJSON exports (see below).
* :func:`fleet` — fleet health for ``/v1/kits`` on an *async* connection
  (``storage.kits`` and ``storage.rejects`` are synchronous).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, LiteralString

import numpy as np
import psycopg
from psycopg import sql

from storage.queries import BBox, Selection

CELL_MEANS_DTYPE = np.dtype([
    ("cell", "<i8"), ("n", "<i8"), ("sum", "<f8"), ("energy", "<f8"), ("duration_s", "<f8"),
])

_WANTED: LiteralString = """
wanted AS MATERIALIZED (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND lon_deg BETWEEN %(west)s AND %(east)s
)"""

_SUMS: LiteralString = """
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM window_partials p {join}
WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
"""

# Keyed roles: no threshold, so no presence rows to read at all.
_CELL_SUMS_ALL: LiteralString = "WITH " + _WANTED + _SUMS.replace("{join}", "")

# The public: only cell-windows with at least k rides. A presence row is one
# (cell-window, ride, day of the ride); the day is a function of the ride (the day
# it started, stream.core.aggregate), so count(*) is the number of distinct rides,
# and the primary key's order (window_start, cell) makes it a streaming count over
# an index-only scan, without the sort count(DISTINCT) needs. MATERIALIZED: the
# planner cannot estimate what the HAVING keeps and would otherwise re-run steps.
_CELL_SUMS_K: LiteralString = "WITH " + _WANTED + """,
passing AS MATERIALIZED (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.window_start, pr.cell
    HAVING count(*) >= %(k)s
)""" + _SUMS.replace("{join}", "JOIN passing USING (cell, window_start)")

# With a days threshold too: the cells whose passing windows hold rides on enough days.
_CELL_DAYS: LiteralString = "WITH " + _WANTED + """,
passing AS MATERIALIZED (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.window_start, pr.cell
    HAVING count(*) >= %(k)s
)
SELECT pr.cell
FROM window_presence pr JOIN passing USING (cell, window_start)
WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
  AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
GROUP BY pr.cell
HAVING count(DISTINCT pr.day) >= %(min_days)s
"""


async def cell_means(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
                     ) -> np.ndarray:
    """Per cell whose centre is in ``bbox`` (west < east): count, Σx, noise energy and
    duration over the cell-windows that pass ``sel``'s privacy thresholds."""
    params = sel.params() | {"west": bbox.west, "south": bbox.south, "east": bbox.east,
                             "north": bbox.north}
    query = _CELL_SUMS_K if sel.min_rides > 1 else _CELL_SUMS_ALL
    cur = await conn.execute(query, params)
    rows = await cur.fetchall()
    out = np.zeros(len(rows), dtype=CELL_MEANS_DTYPE)
    if rows:
        columns = list(zip(*rows, strict=True))
        for name, column in zip(CELL_MEANS_DTYPE.names or (), columns, strict=True):
            out[name] = np.asarray(column, dtype=CELL_MEANS_DTYPE[name])
    if sel.min_days > 1 and len(out):
        cur = await conn.execute(_CELL_DAYS, params)
        enough = np.array([row[0] for row in await cur.fetchall()], dtype=np.int64)
        out = out[np.isin(out["cell"], enough)]
    return out


FleetRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[int, tuple[int, int]]]


async def fleet(conn: psycopg.AsyncConnection[Any], since: datetime) -> FleetRows:
    """Kits, rejected frames by (kit, reason) since ``since``, and (frames, readings) per kit
    stored since ``since``."""
    cur = await conn.execute(
        "SELECT kit_id, pseudonym, status, last_seen_at, battery_pct, firmware_version "
        "FROM kits ORDER BY kit_id")
    kits = await cur.fetchall()
    cur = await conn.execute(
        "SELECT kit_id, reason, count(*) FROM rejected_frames WHERE received_at >= %s "
        "GROUP BY kit_id, reason ORDER BY kit_id, reason", (since,))
    rejects = await cur.fetchall()
    # received_at has no index; ts (indexed, the partition key) bounds the scan: a kit
    # uploads at most a few days of backlog, so a week before `since` is enough.
    cur = await conn.execute(
        "SELECT kit_id, count(DISTINCT (boot_id, seq)), count(*) FROM readings "
        "WHERE received_at >= %s AND ts >= %s - interval '7 days' GROUP BY kit_id",
        (since, since))
    accepted = {int(k): (int(f), int(n)) for k, f, n in await cur.fetchall()}
    return kits, rejects, accepted


# ---------------------------------------------------------------- raw readings as text
#
# MARKED FOR STORAGE: ``storage.queries.aiter_readings`` streams numpy chunks (binary
# COPY), which is what Parquet wants. For CSV and GeoJSON, text formatted by the
# database's own COPY is two to three times faster than formatting numpy in Python
# (bench/bench_export.py), so these two formats take this path.

#: Bytes of COPY text gathered before they go out as one piece.
TEXT_BLOCK_BYTES = 256 * 1024

#: SQL of each export column (api.export.EXPORT_COLUMNS names), over ``readings r``.
EXPORT_SQL: dict[str, LiteralString] = {
    "ts": "r.ts", "kit_id": "r.kit_id", "boot_id": "r.boot_id", "seq": "r.seq",
    "idx": "r.idx", "ride_id": "r.ride_id", "lat_deg": "r.lat_deg", "lon_deg": "r.lon_deg",
    "gnss_fix": "r.gnss_fix", "hdop": "r.hdop", "satellites": "r.satellites",
    "speed_mps": "r.speed_mps", "pm1_ugm3": "r.pm1_ugm3", "pm25_ugm3": "r.pm25_ugm3",
    "pm10_ugm3": "r.pm10_ugm3", "no2_ugm3": "r.no2_ugm3",
    "noise_laeq_db": "r.noise_laeq_db", "noise_lamax_db": "r.noise_lamax_db",
    "temperature_c": "r.temperature_c", "humidity_pct": "r.humidity_pct",
    "interval_ms": "r.interval_ms", "status": "r.status", "qa_flags": "r.qa_flags",
    "cell": "lpad(to_hex(NULLIF(r.cell, 0)), 15, '0')", "received_at": "r.received_at",
}


#: Export columns written as JSON strings (the rest are numbers).
_JSON_STRINGS = frozenset({"ts", "received_at", "cell"})


def _export_copy(names: Sequence[str], *, start: datetime, end: datetime, bbox: BBox | None,
                 kits: Sequence[int], metric_columns: Sequence[str], geojson: bool
                 ) -> sql.Composed:
    # COPY takes no parameters, so values are bound as literals by psycopg.
    lit = sql.Literal
    where: list[sql.Composable] = [
        sql.SQL("r.ts >= {} AND r.ts < {}").format(lit(start), lit(end))]
    if bbox is not None:
        where.append(sql.SQL("r.lat_deg BETWEEN {} AND {} AND r.lon_deg BETWEEN {} AND {}")
                     .format(lit(bbox.south), lit(bbox.north), lit(bbox.west), lit(bbox.east)))
    if kits:
        where.append(sql.SQL("r.kit_id = ANY({}::bigint[])").format(lit(list(kits))))
    if metric_columns:
        where.append(sql.SQL("(") + sql.SQL(" OR ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier("r", c)) for c in metric_columns)
            + sql.SQL(")"))
    if geojson:
        # Text concatenation: json_build_object looks up the type of every argument on
        # every row, which made it the bottleneck of GeoJSON exports.
        parts: list[sql.Composable] = [sql.SQL(
            "'{\"type\":\"Feature\",\"geometry\":' || CASE WHEN r.lat_deg IS NULL "
            "OR r.lon_deg IS NULL THEN 'null' ELSE '{\"type\":\"Point\",\"coordinates\":[' "
            "|| r.lon_deg::text || ',' || r.lat_deg::text || ']}' END || ',\"properties\":{'")]
        for i, name in enumerate(names):
            key = ("," if i else "") + '"' + name + '":'
            expr = sql.SQL(EXPORT_SQL[name])
            value = (sql.SQL("'\"' || {} || '\"'").format(expr) if name in _JSON_STRINGS
                     else sql.SQL("{}::text").format(expr))
            parts.append(sql.SQL("{} || COALESCE({}, 'null')").format(lit(key), value))
        parts.append(sql.SQL("'}}'"))
        select = sql.SQL(" || ").join(parts)
    else:
        select = sql.SQL(", ").join(sql.SQL(EXPORT_SQL[name]) for name in names)
    query = sql.SQL(
        "SELECT {} FROM readings r WHERE {} ORDER BY r.ts, r.kit_id, r.boot_id, r.seq, r.idx"
    ).format(select, sql.SQL(" AND ").join(where))
    # Text format for GeoJSON: one Feature per line, as is (JSON holds no tab, newline or
    # backslash here, the only characters text COPY would escape).
    fmt = sql.SQL("text") if geojson else sql.SQL("csv")
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(query, fmt)


async def copy_readings_text(conn: psycopg.AsyncConnection[Any], names: Sequence[str], *,
                             start: datetime, end: datetime, bbox: BBox | None,
                             kits: Sequence[int], metric_columns: Sequence[str],
                             geojson: bool) -> AsyncIterator[bytes]:
    """Raw readings in time order as the server's CSV (no header), chunk by chunk.

    With ``geojson``, each line is one Feature object (text COPY).
    Timestamps are written in UTC (``SET LOCAL TimeZone``). The server streams
    COPY output and psycopg hands over each network chunk, so memory stays
    flat whatever the row count.
    """
    statement = _export_copy(names, start=start, end=end, bbox=bbox, kits=kits,
                             metric_columns=metric_columns, geojson=geojson)
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET LOCAL TimeZone = 'UTC'")
        async with cur.copy(statement) as copy:
            # The server sends one message per row: gather them into blocks, or each
            # row would cost a trip through the HTTP stack.
            # COPY messages are whole rows, so blocks end on whole lines.
            block = bytearray()
            async for data in copy:
                block += data
                if len(block) >= TEXT_BLOCK_BYTES:
                    yield bytes(block)
                    block.clear()
            if block:
                yield bytes(block)
