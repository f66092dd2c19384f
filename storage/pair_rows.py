"""The rows of the cells pair queries (a metric and its covariate merged in one pass,
:func:`storage.cell_stats.cell_stats_with`, daily and long), packed in one value.

Every column of their rows has a fixed width and a value, so the rows come as one
``bytea`` of their binary send forms beside their count (:func:`packed`), which numpy
reads with one frombuffer (:func:`pair_rows`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, LiteralString

import numpy as np
from psycopg import sql
from psycopg.abc import AdaptContext

from storage.exceptions import QueryError
from storage.merged_stats import HIST_WIRE, NumberedQuery, check_hists

# The pair queries of storage.cell_stats and storage.long_cells (a metric and its
# covariate merged in one pass): the name and columns of their ``agg`` CTE, and the rows
# they return from it and from ``pres``, in the shape storage.cell_stats reads.
_MERGED_NAMES: LiteralString = "n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist"
PAIR_AGG: LiteralString = (
    "agg (key, " + _MERGED_NAMES + ", c_" + _MERGED_NAMES.replace(", ", ", c_") + ")"
)
# Every column of a pair query's rows has a fixed width and a value (NULL becomes NaN,
# a presence row's partials -1 readings and zeros), so that the rows come packed in
# one value that numpy reads with one frombuffer (:func:`packed`, :func:`pair_rows`): as
# tuples, psycopg's fetch and their conversion to numpy column by column were a quarter
# of the API's CPU for an officer's hour of cells at resolution 10 (bench_reads' backlog).
_NAN: LiteralString = "'NaN'::float8"
PAIR_ROWS: LiteralString = (
    """
SELECT agg.key, agg.n::bigint, agg.sum, agg.sumsq, coalesce(agg.min, {nan}),
       coalesce(agg.max, {nan}), agg.energy, agg.duration_s, coalesce(agg.lamax_db, {nan}),
       agg.hist, 0::bigint, 0::bigint, c.lat_deg, c.lon_deg, {nan}, {nan},
       agg.c_n::bigint, coalesce(agg.c_sum, {nan}), coalesce(agg.c_sumsq, {nan}),
       coalesce(agg.c_min, {nan}), coalesce(agg.c_max, {nan}), coalesce(agg.c_energy, {nan}),
       coalesce(agg.c_duration_s, {nan}), coalesce(agg.c_lamax_db, {nan})
FROM agg JOIN h3_cells c ON c.cell = agg.key
UNION ALL
SELECT key, -1, 0, 0, {nan}, {nan}, 0, 0, {nan}, array_fill(0::bigint, ARRAY[32]), rides,
       days, {nan}, {nan}, coalesce(ride_w, {nan}), coalesce(ride_w_sq, {nan}), 0, 0, 0,
       {nan}, {nan}, 0, 0, {nan}
FROM pres WHERE days >= %(min_days)s"""
).replace("{nan}", _NAN)

_F8 = np.dtype(">f8")
_I8 = np.dtype(">i8")
#: The wire layout of :data:`PAIR_ROWS`' columns, in their order (a presence row has
#: ``n`` -1).
PAIR_COLUMNS = (
    ("key", _I8),
    ("n", _I8),
    *((name, _F8) for name in ("sum", "sumsq", "min", "max", "energy", "duration_s")),
    ("lamax_db", _F8),
    ("hist", HIST_WIRE),
    ("rides", _I8),
    ("days", _I8),
    *((name, _F8) for name in ("lat", "lon", "ride_w", "ride_w_sq")),
    ("c_n", _I8),
    *((f"c_{name}", _F8) for name in ("sum", "sumsq", "min", "max", "energy", "duration_s")),
    ("c_lamax_db", _F8),
)
_PAIR_ROW = np.dtype(list(PAIR_COLUMNS))
_SEND = {_I8: "int8send", _F8: "float8send", HIST_WIRE: "array_send"}


def packed(rows: LiteralString) -> LiteralString:
    """``rows`` (a query ending in :data:`PAIR_ROWS`) as one row: their number and every
    row's columns in their binary send form (``int8send``, ``float8send``, ``array_send``),
    concatenated in one ``bytea`` that :func:`pair_rows` reads with one frombuffer.

    One value, not a row per cell: psycopg's async COPY hands over the rows of a binary
    COPY one message and one await each, about 5 µs a row in the API's event loop (13 ms
    of an officer's hour of 2,604 rows at resolution 10, py-spy on the API server over
    bench/bench_reads.py's backlog). A NULL field makes its row's bytes NULL, which
    ``string_agg`` skips: the count tells."""
    names = [name for name, _wire in PAIR_COLUMNS]
    sends: list[str] = [f"{_SEND[wire]}(r.{name})" for name, wire in PAIR_COLUMNS]
    return (
        "SELECT count(*)::bigint, coalesce(string_agg("
        + " || ".join(sends)
        + ", ''::bytea), ''::bytea)\nFROM ("
        + rows
        + "\n) r ("
        + ", ".join(names)
        + ")"
    )


def pair_rows(count: int, data: bytes) -> np.ndarray:
    """:func:`packed`'s ``count`` rows of :data:`PAIR_ROWS` as a structured array whose
    fields are named as :data:`PAIR_COLUMNS`; raises QueryError if they do not have their
    layout (a bug in the query, not bad input)."""
    try:
        rows = np.frombuffer(data, dtype=_PAIR_ROW)
    except ValueError as exc:
        raise QueryError("the pair rows are not of their fixed layout") from exc
    if len(rows) != count:
        raise QueryError("the pair rows have a NULL or a field not of its fixed width")
    check_hists(rows["hist"])
    return rows


def literal_query(query: NumberedQuery, params: Mapping[str, Any], conn: AdaptContext) -> bytes:
    """``query`` with the parameters as literals, rendered by psycopg's adapters: numbers
    and instants (the pair queries were planned so since they came as a COPY, which takes
    no bound parameters; kept, the plans are those measured)."""
    values = [sql.Literal(v).as_bytes(conn) for v in query.args(params)]
    return _NUMBER.sub(lambda m: values[int(m.group(1)) - 1], query.sql)


_NUMBER = re.compile(rb"\$(\d+)")
