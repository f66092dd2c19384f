"""The ``readings`` table as the writer fills it: its columns, absent values, COPY payloads.

A reading's row is every field of ``ENRICHED_DTYPE``, times as ``timestamptz``
(``ts``, ``received_at``). The stream marks an absent value inside the reading
(NaN, -1 satellites, cell 0); the table stores NULL. :data:`ABSENT` is that
mapping, the only one: the binary COPY straight into ``readings`` cuts those
values out as NULL fields (:func:`table_payload`), and the INSERT from the
staging table turns them into NULL with ``NULLIF`` (:data:`INSERT_NEW`); binary
exports turn NULL back into the marker (storage/export_columns.py). The staging
table and the holding table (storage/held.py) keep the markers, so their rows
have one fixed width and decode with :func:`enriched_from_rows`.
"""

from __future__ import annotations

import math

import numpy as np
from psycopg import sql

from firmware_protocol.readings import OPTIONAL_FLOAT_FIELDS
from storage import copybin, staging
from storage.copybin import Column, scalar
from stream.core.batch import ENRICHED_DTYPE

#: A reading's key in numpy: identity plus the partition column
#: (see migrations/0002_readings.plain.sql for why ts belongs to it).
KEY_FIELDS = ("kit_id", "boot_id", "seq", "idx", "ts_ms")
#: The same key as the table's columns.
KEY_COLUMNS = ("kit_id", "boot_id", "seq", "idx", "ts")

#: The staging table's columns: a row number, then the table's own (``[1:]``).
READING_COLUMNS: tuple[Column, ...] = (
    scalar("row_no", "integer"),
    scalar("kit_id", "bigint"),
    scalar("boot_id", "bigint"),
    scalar("seq", "bigint"),
    scalar("idx", "integer"),
    scalar("ts", "timestamptz"),
    scalar("lat_deg", "double precision"),
    scalar("lon_deg", "double precision"),
    scalar("gnss_fix", "smallint"),
    scalar("hdop", "real"),
    scalar("satellites", "smallint"),
    scalar("speed_mps", "real"),
    scalar("pm1_ugm3", "real"),
    scalar("pm25_ugm3", "real"),
    scalar("pm10_ugm3", "real"),
    scalar("no2_ugm3", "real"),
    scalar("noise_laeq_db", "real"),
    scalar("noise_lamax_db", "real"),
    scalar("interval_ms", "bigint"),
    scalar("temperature_c", "real"),
    scalar("humidity_pct", "real"),
    scalar("status", "integer"),
    scalar("qa_flags", "bigint"),
    scalar("cell", "bigint"),
    scalar("ride_id", "bigint"),
    scalar("received_at", "timestamptz"),
)
TABLE_COLUMNS = READING_COLUMNS[1:]

#: How the stream marks an absent value, per column; stored as NULL.
ABSENT: dict[str, float] = {
    **dict.fromkeys(OPTIONAL_FLOAT_FIELDS, math.nan),
    "satellites": -1,
    "cell": 0,
}


def absent_masks(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of :data:`ABSENT`, the rows where the value is absent."""
    return {
        name: np.isnan(rows[name]) if math.isnan(marker) else rows[name] == marker
        for name, marker in ABSENT.items()
    }


def absent_marker(name: str) -> sql.Composable:
    """The marker of an absent ``name`` as an SQL literal (``'NaN'``, ``-1``, ``0``)."""
    marker = ABSENT[name]
    return sql.Literal("NaN") if math.isnan(marker) else sql.Literal(int(marker))


def as_written(column: Column, table: str = "r") -> sql.Composable:
    """``table``'s ``column`` as the writer had it: NULL back to the absent marker, cast to
    the column's type (the marker's literal would widen a smallint to integer), for a
    binary COPY out that :func:`enriched_from_rows` decodes."""
    value = sql.SQL("{}.{}").format(sql.Identifier(table), sql.Identifier(column.name))
    if column.name not in ABSENT:
        return value
    return sql.SQL("coalesce({}, {})::{}").format(
        value, absent_marker(column.name), sql.SQL(column.sql_type)
    )


def _null_if_absent(name: str) -> sql.Composable:
    column = sql.Identifier(name)
    if name not in ABSENT:
        return column
    # PostgreSQL's NaN equals NaN (unlike IEEE), so NULLIF catches it.
    return sql.SQL("NULLIF({}, {})").format(column, absent_marker(name))


STAGING = staging.StagingTable("bikesense_stage_readings", READING_COLUMNS)
#: The fast path: the batch straight into ``readings`` (absent values cut out as NULL).
COPY_INTO_TABLE = staging.render(staging.copy_in("readings", TABLE_COLUMNS))
COPY_INTO_STAGING = staging.render(STAGING.copy_in())

# The staged readings not stored yet are inserted; the row numbers of exactly those
# come back (one array), to pick the new readings out of the batch.
INSERT_NEW = staging.render(
    sql.SQL(
        "WITH ins AS (\n"
        "    INSERT INTO readings ({columns})\n"
        "    SELECT {values}\n"
        "    FROM {staging}\n"
        "    ORDER BY row_no\n"
        "    ON CONFLICT DO NOTHING\n"
        "    RETURNING {key}\n"
        ")\n"
        "SELECT array_agg(s.row_no)\n"
        "FROM ins JOIN {staging} AS s USING ({key})"
    ).format(
        columns=staging.column_list(TABLE_COLUMNS),
        values=sql.SQL(", ").join(_null_if_absent(c.name) for c in TABLE_COLUMNS),
        staging=STAGING.identifier,
        key=sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS)),
    )
)


def reading_values(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Enriched rows as the columns of :data:`READING_COLUMNS` (times as PostgreSQL
    timestamps; ``row_no`` left to the caller)."""
    values = {name: rows[name] for name in ENRICHED_DTYPE.names or ()}
    values["ts"] = copybin.ms_to_pg_timestamp(rows["ts_ms"])
    values["received_at"] = copybin.ms_to_pg_timestamp(rows["received_ms"])
    return values


def enriched_from_rows(rows: np.ndarray) -> np.ndarray:
    """The inverse of :func:`reading_values`: decoded COPY rows of :data:`TABLE_COLUMNS`
    (absent values as their markers, not NULL) as ``ENRICHED_DTYPE``."""
    out = np.empty(len(rows), dtype=ENRICHED_DTYPE)
    for name in ENRICHED_DTYPE.names or ():
        if name == "ts_ms":
            out[name] = copybin.pg_timestamp_to_ms(rows["ts"])
        elif name == "received_ms":
            out[name] = copybin.pg_timestamp_to_ms(rows["received_at"])
        else:
            out[name] = rows[name]
    return out


def table_payload(rows: np.ndarray) -> bytes:
    """The readings as a binary COPY into ``readings`` itself, absent values as NULL."""
    return copybin.encode(TABLE_COLUMNS, reading_values(rows), len(rows), absent_masks(rows))


def staging_payload(rows: np.ndarray) -> bytes:
    """The readings as a binary COPY into :data:`STAGING`, numbered in order, absent
    values as their markers."""
    values = reading_values(rows)
    values["row_no"] = np.arange(len(rows), dtype=np.int32)
    return copybin.encode(READING_COLUMNS, values, len(rows))
