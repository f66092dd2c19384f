"""Raw readings as the database's own CSV / JSON text, for the CSV and GeoJSON exports.

``storage.queries.aiter_readings`` streams numpy chunks (binary COPY), which is
what Parquet wants. For CSV and GeoJSON, text formatted by the database's own
COPY is two to three times faster than formatting numpy in Python
(bench/bench_export.py), so these two formats take this path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from storage.queries import BBox

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
