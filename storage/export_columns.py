"""How the database encodes one exported reading: the columns, per encoding.

Every column an export can have is SQL over ``readings r`` twice: as text for
CSV and GeoJSON (NULL where the value is absent) and as a fixed-width value for
binary rows, never NULL: an absent value comes back as the marker the stream
uses (:data:`storage.readings.ABSENT`: NaN, -1 satellites, cell 0), so a block
of binary rows decodes with one ``np.frombuffer`` (:func:`decode_binary_rows`).
Pseudonymous exports (storage/pseudonyms.py) replace the time by its second
and add the day's kit and ride names; columns that would link a kit's days are
withheld.

Two kinds of columns say what ``qa_flags`` means, generated from the code that
decides it rather than from a table of their own: ``qa_flag_names``, the names
of the flags set (:data:`stream.core.qa.SINGLE_FLAGS`, lowest bit first, joined
by ``|``, empty when clean; text only: a binary export decodes ``qa_flags``
with :func:`qa_flag_names`), and ``<metric>_on_map``, whether the map's
aggregates counted the reading for that metric (the metric's
:class:`stream.core.policy.MapRule` of the default policy, as SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import LiteralString

import numpy as np
from psycopg import sql

from storage.correction_sql import CORRECTED_METRICS, VERSION_CHARS, corrected_sql, version_sql
from storage.exceptions import QueryError
from storage.pseudonyms import PSEUDONYM_CHARS, RIDE_PSEUDONYM_CHARS
from storage.readings import absent_marker
from stream.core.partials import Metric
from stream.core.policy import DEFAULT_POLICY, MapRule
from stream.core.qa import SINGLE_FLAGS, flag_names


class Encoding(StrEnum):
    """How a slice's rows come back."""

    CSV = "csv"  # CSV lines, each ending in a newline
    GEOJSON = "geojson"  # GeoJSON Feature objects separated by ",\n"
    BINARY = "binary"  # fixed-width rows, see binary_row_dtype


@dataclass(frozen=True, slots=True)
class ExportColumn:
    text: sql.Composable  # SQL for CSV and GeoJSON; NULL where the value is absent
    binary: sql.Composable | None  # SQL for binary rows, never NULL; None: text only
    wire: str  # numpy dtype of the value as record_send writes it (big-endian)
    quoted: bool = False  # a string in GeoJSON
    nullable: bool = False
    csv: sql.Composable | None = None  # SQL for CSV where it differs from ``text``
    rule: MapRule | None = None  # a <metric>_on_map column: the rule it tests


def _plain(column: LiteralString, wire: str, *, quoted: bool = False) -> ExportColumn:
    return ExportColumn(sql.SQL(column), sql.SQL(column), wire, quoted=quoted)


def _nullable(name: LiteralString, pg_type: LiteralString, wire: str) -> ExportColumn:
    """``r.<name>``, NULL as its absent marker in binary rows."""
    column = sql.SQL("r.") + sql.Identifier(name)
    binary = sql.SQL("COALESCE({}, {}::{})").format(column, absent_marker(name), sql.SQL(pg_type))
    return ExportColumn(column, binary, wire, nullable=True)


#: What separates the names in ``qa_flag_names``: no flag name holds it, and no CSV,
#: GeoJSON or R reader treats it specially.
QA_NAME_SEPARATOR = "|"


def qa_flag_names(flags: int) -> str:
    """``qa_flag_names`` of a reading with ``flags``, as the text exports write it."""
    return QA_NAME_SEPARATOR.join(flag_names(flags))


def _qa_flag_names_sql() -> sql.Composable:
    # concat_ws skips the NULLs of the flags not set; clean readings skip every test.
    tests = sql.SQL(", ").join(
        sql.SQL("CASE WHEN r.qa_flags & {} <> 0 THEN {} END").format(
            sql.Literal(int(flag)), sql.Literal(flag.name)
        )
        for flag in SINGLE_FLAGS
    )
    return sql.SQL("CASE WHEN r.qa_flags = 0 THEN '' ELSE concat_ws({}, {}) END").format(
        sql.Literal(QA_NAME_SEPARATOR), tests
    )


def map_rule_sql(*rules: MapRule) -> sql.Composable:
    """True where a reading over ``readings r`` meets every one of ``rules``, never NULL.

    Stored readings hold NULL where the stream's marker says absent (NaN, cell 0:
    storage/readings.py), so "present" and "has a cell" are ``IS NOT NULL``. Several
    rules make one test: every value present, a cell, none of any rule's excluding
    flags, every positive column above zero.
    """
    values = dict.fromkeys(rule.value for rule in rules)
    positive = dict.fromkeys(c for rule in rules for c in rule.positive)
    excluding = 0
    for rule in rules:
        excluding |= int(rule.excluding)
    tests = [
        *(sql.SQL("{} IS NOT NULL").format(sql.Identifier("r", v)) for v in values),
        sql.SQL("r.cell IS NOT NULL"),
        sql.SQL("r.qa_flags & {} = 0").format(sql.Literal(excluding)),
        *(sql.SQL("{} > 0").format(sql.Identifier("r", c)) for c in positive),
    ]
    return sql.SQL("({})").format(sql.SQL(" AND ").join(tests))


def on_map_column(metric: Metric) -> str:
    """The name of the column saying whether the map counted a reading for ``metric``."""
    return f"{metric.api_name}_on_map"


#: A boolean in CSV: the spelling that base R's read.csv (type.convert) reads as logical
#: as pandas does, which "true" is not. GeoJSON has JSON's true and false.
CSV_BOOLEAN = {True: "TRUE", False: "FALSE"}


def _on_map(metric: Metric) -> ExportColumn:
    rule = DEFAULT_POLICY.rule(metric)
    test = map_rule_sql(rule)
    csv = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
        test, sql.Literal(CSV_BOOLEAN[True]), sql.Literal(CSV_BOOLEAN[False])
    )
    return ExportColumn(sql.SQL("{}::text").format(test), test, "?", csv=csv, rule=rule)


def corrected_column(metric: Metric) -> str:
    """The column of ``metric``'s corrected value (docs/calibration.md)."""
    return f"{metric.api_name}_corrected_ugm3"


def version_column(metric: Metric) -> str:
    """The column naming the correction that made ``metric``'s corrected value."""
    return f"{metric.api_name}_correction_version"


def _corrected(metric: Metric) -> dict[str, ExportColumn]:
    """A calibrated metric's corrected value and its correction's version, over the
    corrections joined as storage/correction_sql.py says; NULL where none applies."""
    y = corrected_sql(metric).sql
    version = version_sql(metric)
    return {
        corrected_column(metric): ExportColumn(
            y, sql.SQL("COALESCE({}, 'NaN'::float8)").format(y), ">f8", nullable=True
        ),
        version_column(metric): ExportColumn(
            version,
            sql.SQL("rpad(COALESCE({}, ''), {})").format(version, sql.Literal(VERSION_CHARS)),
            f"S{VERSION_CHARS}",
            quoted=True,
            nullable=True,
        ),
    }


#: Columns that need a metric's corrections joined, by metric.
CORRECTION_COLUMNS = {
    name: m for m in CORRECTED_METRICS for name in (corrected_column(m), version_column(m))
}

#: Every column an export can have (api.export names them), over ``readings r``.
COLUMNS: dict[str, ExportColumn] = {
    "ts": _plain("r.ts", ">i8", quoted=True),
    "kit_id": _plain("r.kit_id", ">i8"),
    "boot_id": _plain("r.boot_id", ">i8"),
    "seq": _plain("r.seq", ">i8"),
    "idx": _plain("r.idx", ">i4"),
    "ride_id": _plain("r.ride_id", ">i8"),
    "lat_deg": _nullable("lat_deg", "float8", ">f8"),
    "lon_deg": _nullable("lon_deg", "float8", ">f8"),
    "gnss_fix": _plain("r.gnss_fix", ">i2"),
    "hdop": _nullable("hdop", "real", ">f4"),
    "satellites": _nullable("satellites", "smallint", ">i2"),
    "speed_mps": _nullable("speed_mps", "real", ">f4"),
    "pm1_ugm3": _nullable("pm1_ugm3", "real", ">f4"),
    "pm25_ugm3": _nullable("pm25_ugm3", "real", ">f4"),
    "pm10_ugm3": _nullable("pm10_ugm3", "real", ">f4"),
    "no2_ugm3": _nullable("no2_ugm3", "real", ">f4"),
    "noise_laeq_db": _nullable("noise_laeq_db", "real", ">f4"),
    "noise_lamax_db": _nullable("noise_lamax_db", "real", ">f4"),
    "temperature_c": _nullable("temperature_c", "real", ">f4"),
    "humidity_pct": _nullable("humidity_pct", "real", ">f4"),
    "interval_ms": _plain("r.interval_ms", ">i8"),
    "status": _plain("r.status", ">i4"),
    "qa_flags": _plain("r.qa_flags", ">i8"),
    **{name: c for m in CORRECTED_METRICS for name, c in _corrected(m).items()},
    "qa_flag_names": ExportColumn(_qa_flag_names_sql(), None, "", quoted=True),
    **{on_map_column(m): _on_map(m) for m in Metric},
    "cell": ExportColumn(
        sql.SQL("lpad(to_hex(NULLIF(r.cell, 0)), 15, '0')"),
        _nullable("cell", "bigint", ">i8").binary,
        ">i8",
        quoted=True,
        nullable=True,
    ),
    "received_at": _plain("r.received_at", ">i8", quoted=True),
}

# The reading's second: date_bin is arithmetic on the timestamp, date_trunc converts it to
# calendar fields and back (measured slower).
SECOND: LiteralString = "date_bin('1 second', r.ts, timestamptz '2000-01-01 00:00:00+00')"

#: Pseudonymous exports: what replaces or joins the columns above (m: the day's names).
PSEUDONYMOUS_COLUMNS: dict[str, ExportColumn] = {
    "ts": _plain(SECOND, ">i8", quoted=True),
    "kit_pseudonym": _plain("m.kit_name", f"S{PSEUDONYM_CHARS}", quoted=True),
    "ride_pseudonym": _plain("m.ride_name", f"S{RIDE_PSEUDONYM_CHARS}", quoted=True),
}

#: Columns that would link a kit's days (storage.pseudonyms.WITHHELD_FIELDS, as columns).
WITHHELD_COLUMNS = frozenset({"kit_id", "boot_id", "seq", "idx", "ride_id", "received_at"})


def column(name: str, pseudonymous: bool) -> ExportColumn:
    """The column ``name``; :class:`QueryError` if there is none, or not in this kind of
    export."""
    if pseudonymous:
        if name in WITHHELD_COLUMNS:
            raise QueryError(f"column {name!r} is not available in pseudonymous exports")
        if name in PSEUDONYMOUS_COLUMNS:
            return PSEUDONYMOUS_COLUMNS[name]
    elif name in PSEUDONYMOUS_COLUMNS and name != "ts":
        raise QueryError(f"column {name!r} exists only in pseudonymous exports")
    try:
        return COLUMNS[name]
    except KeyError:
        raise QueryError(f"unknown export column {name!r}") from None


def _runs(columns: Sequence[ExportColumn]) -> list[list[int]]:
    """Indexes of ``columns`` in runs: each ``<metric>_on_map`` run together, others alone."""
    runs: list[list[int]] = []
    for i, c in enumerate(columns):
        if c.rule is not None and runs and columns[runs[-1][-1]].rule is not None:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _all_on_map(columns: Sequence[ExportColumn]) -> sql.Composable:
    """One test for a run of ``<metric>_on_map`` columns all true, as most readings are:
    each further value costs the database about as much as formatting it
    (bench/bench_export.py), so a run is one value when all hold."""
    return map_rule_sql(*(c.rule for c in columns if c.rule is not None))


def row_sql(names: Sequence[str], encoding: Encoding, pseudonymous: bool) -> sql.Composable:
    """One row of ``names`` in ``encoding``, as an SQL expression."""
    columns = [column(n, pseudonymous) for n in names]
    if encoding is Encoding.BINARY:
        # record_send writes each field as (type oid, length, value): fixed widths, since no
        # field is NULL, so a block of rows decodes with one np.frombuffer.
        binary = []
        for name, c in zip(names, columns, strict=True):
            if c.binary is None:
                raise QueryError(f"column {name!r} is not in binary rows (text exports only)")
            binary.append(c.binary)
        return sql.SQL("record_send(ROW({}))").format(sql.SQL(", ").join(binary))
    if encoding is Encoding.CSV:
        # NULL is CSV's empty field. No value here can hold a comma, quote, newline or '#'
        # (numbers, timestamps, hex, base32, flag names, TRUE/FALSE), so none is quoted and
        # none can be read as a comment (docs/api.md). concat_ws with one cast per nullable
        # value measured cheaper than concat() with a separator argument per value.
        def csv_value(c: ExportColumn) -> sql.Composable:
            if c.csv is not None:
                return c.csv
            return sql.SQL("COALESCE({}::text, '')").format(c.text) if c.nullable else c.text

        values: list[sql.Composable] = []
        for run in _runs(columns):
            if len(run) == 1:
                values.append(csv_value(columns[run[0]]))
                continue
            every = ",".join(CSV_BOOLEAN[True] for _ in run)
            values.append(
                sql.SQL("CASE WHEN {} THEN {} ELSE concat_ws(',', {}) END").format(
                    _all_on_map([columns[i] for i in run]),
                    sql.Literal(every),
                    sql.SQL(", ").join(csv_value(columns[i]) for i in run),
                )
            )
        return sql.SQL("concat_ws(',', {}) || E'\\n'").format(sql.SQL(", ").join(values))
    lat, lon = COLUMNS["lat_deg"].text, COLUMNS["lon_deg"].text
    parts: list[sql.Composable] = [
        sql.SQL(
            '\'{{"type":"Feature","geometry":\', CASE WHEN {lat} IS NULL OR {lon} IS NULL'
            " THEN 'null' ELSE concat('{{\"type\":\"Point\",\"coordinates\":[', {lon}, ',',"
            " {lat}, ']}}') END"
        ).format(lat=lat, lon=lon)
    ]

    def key(i: int) -> str:
        return (',"properties":{' if i == 0 else ",") + f'"{names[i]}":'

    def json_value(c: ExportColumn) -> sql.Composable:
        if c.quoted:
            return (
                sql.SQL("COALESCE('\"' || {} || '\"', 'null')").format(c.text)
                if c.nullable
                else sql.SQL("'\"' || {} || '\"'").format(c.text)
            )
        return sql.SQL("COALESCE({}::text, 'null')").format(c.text) if c.nullable else c.text

    for run in _runs(columns):
        if len(run) == 1:
            parts += [sql.Literal(key(run[0])), json_value(columns[run[0]])]
            continue
        every = "".join(key(i) + "true" for i in run)
        each = [p for i in run for p in (sql.Literal(key(i)), json_value(columns[i]))]
        parts.append(
            sql.SQL("CASE WHEN {} THEN {} ELSE concat({}) END").format(
                _all_on_map([columns[i] for i in run]),
                sql.Literal(every),
                sql.SQL(", ").join(each),
            )
        )
    parts.append(sql.Literal("}}"))
    return sql.SQL("concat({})").format(sql.SQL(", ").join(parts))


def binary_row_dtype(names: Sequence[str], *, pseudonymous: bool) -> np.dtype[np.void]:
    """The layout of one row of an :attr:`Encoding.BINARY` block.

    Timestamps are PostgreSQL's (µs since 2000-01-01 UTC), values big-endian,
    pseudonyms fixed-width ASCII; ``_n``, ``_oid<i>`` and ``_len<i>`` are
    ``record_send``'s field count and per-field headers.
    """
    fields: list[tuple[str, str]] = [("_n", ">i4")]
    for i, name in enumerate(names):
        fields += [
            (f"_oid{i}", ">u4"),
            (f"_len{i}", ">i4"),
            (name, column(name, pseudonymous).wire),
        ]
    return np.dtype(fields)


def decode_binary_rows(names: Sequence[str], data: bytes, *, pseudonymous: bool) -> np.ndarray:
    """The rows of an :attr:`Encoding.BINARY` block, checked, as a structured array."""
    dtype = binary_row_dtype(names, pseudonymous=pseudonymous)
    if len(data) % dtype.itemsize:
        raise QueryError(
            f"a binary export block of {len(data)} bytes is not whole rows "
            f"of {dtype.itemsize} bytes"
        )
    rows = np.frombuffer(data, dtype=dtype)
    if len(rows):
        if np.any(rows["_n"] != len(names)):
            raise QueryError("binary export rows with an unexpected number of fields")
        for i, name in enumerate(names):
            if np.any(rows[f"_len{i}"] != dtype[name].itemsize):
                raise QueryError(f"binary export field {name!r} is NULL or of another width")
    return rows
