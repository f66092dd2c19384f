"""Time series of a selection: statistics per time bucket over one cell or a bbox.

Each bucket's figures are merged from the passing units in it (:mod:`storage.selection`,
:mod:`storage.merged_stats`); sparse, or gap-filled with an empty bucket where there is
no data. Comes twice: :func:`time_series` for ``psycopg.Connection`` and
:func:`atime_series` for ``psycopg.AsyncConnection``, sharing the SQL and the
conversions.
"""

from __future__ import annotations

from typing import Any, LiteralString

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage.cellwindows import per_metric
from storage.corrected_windows import check_calibrated, corrected_per_metric
from storage.exceptions import QueryError
from storage.merged_stats import MERGED, PARTIALS_IN_RANGE, presence_by, to_stats
from storage.migrate import Backend
from storage.selection import UNITS, WANTED_BBOX, BBox, Selection, bbox_params, epoch_ms
from stream.core.partials import Metric

_WANTED_CELL: LiteralString = "wanted AS (SELECT %(cell)s::bigint AS cell)"

_BUCKET: LiteralString = (
    "(extract(epoch FROM date_bin(make_interval(secs => %(bucket_s)s), {col},"
    " timestamptz '1970-01-01 00:00:00+00')) * 1000)::bigint"
)


def _series_template(wanted: LiteralString) -> LiteralString:
    p_bucket: LiteralString = _BUCKET.replace("{col}", "p.window_start")
    pr_bucket: LiteralString = _BUCKET.replace("{col}", "pr.window_start")
    return (
        "WITH "
        + wanted
        + ","
        + UNITS
        + """,
agg AS (SELECT """
        + p_bucket
        + " AS key, "
        + MERGED
        + PARTIALS_IN_RANGE
        + """ GROUP BY 1),"""
        + presence_by(pr_bucket)
        + """
SELECT agg.*, pres.rides, pres.days, 'NaN'::float8, 'NaN'::float8, pres.ride_w,
       pres.ride_w_sq
FROM agg JOIN pres USING (key)
WHERE pres.days >= %(min_days)s
ORDER BY agg.key"""
    )


_SERIES_BBOX_QUERY = per_metric(_series_template(WANTED_BBOX))
_SERIES_CELL_QUERY = per_metric(_series_template(_WANTED_CELL))
_SERIES_BBOX_CORRECTED = corrected_per_metric(_series_template(WANTED_BBOX))
_SERIES_CELL_CORRECTED = corrected_per_metric(_series_template(_WANTED_CELL))

# Gap-filled series: every bucket from the one holding ``start`` to the last before
# ``end``, an empty one (NULL columns) where the sparse series has no row, so a chart
# shows an hour without data as a gap. Buckets are whole multiples of bucket_ms from
# 1970-01-01, as _BUCKET's date_bin. TimescaleDB fills them with time_bucket_gapfill
# (its integer form: origin 0, the same buckets); plain PostgreSQL joins the series to
# generate_series. One row per bucket either way, so the aggregates are identities.
_SERIES_COLUMNS: LiteralString = (
    "s.n, s.sum, s.sumsq, s.min, s.max, s.energy, s.duration_s, s.lamax_db, s.hist,"
    " s.rides, s.days, s.lat_deg, s.lon_deg, s.ride_w, s.ride_w_sq"
)
_SPARSE_AS: LiteralString = (
    "(key, n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist, rides, days,"
    " lat_deg, lon_deg, ride_w, ride_w_sq)"
)
_GAPFILL_TIMESCALE: LiteralString = (
    "SELECT time_bucket_gapfill(%(bucket_ms)s::bigint, s.key, %(start_ms)s::bigint,"
    " %(end_ms)s::bigint) AS bucket, max(s.n), max(s.sum), max(s.sumsq), max(s.min),"
    " max(s.max), max(s.energy), max(s.duration_s), max(s.lamax_db), max(s.hist),"
    " max(s.rides), max(s.days), max(s.lat_deg), max(s.lon_deg), max(s.ride_w),"
    " max(s.ride_w_sq)"
    " FROM sparse s GROUP BY bucket ORDER BY bucket"
)
_GAPFILL_PLAIN: LiteralString = (
    "SELECT b.key, "
    + _SERIES_COLUMNS
    + " FROM generate_series(floor(%(start_ms)s::numeric / %(bucket_ms)s)::bigint"
    " * %(bucket_ms)s, %(end_ms)s::bigint - 1, %(bucket_ms)s::bigint) AS b (key)"
    " LEFT JOIN sparse s USING (key) ORDER BY b.key"
)


def _filled(sparse: dict[Metric, bytes], fill: LiteralString) -> dict[Metric, bytes]:
    head, tail = b"WITH sparse " + _SPARSE_AS.encode() + b" AS (", b")\n" + fill.encode()
    return {metric: head + query + tail for metric, query in sparse.items()}


#: (cell or bbox, backend, corrected) -> the gap-filled query of each metric.
_FILLED_QUERIES = {
    (by, backend, corrected): _filled(sparse, fill)
    for by, corrected, sparse in (
        ("cell", False, _SERIES_CELL_QUERY),
        ("bbox", False, _SERIES_BBOX_QUERY),
        ("cell", True, _SERIES_CELL_CORRECTED),
        ("bbox", True, _SERIES_BBOX_CORRECTED),
    )
    for backend, fill in ((Backend.TIMESCALE, _GAPFILL_TIMESCALE), (Backend.PLAIN, _GAPFILL_PLAIN))
}

_BACKEND_QUERY: LiteralString = (
    "SELECT backend FROM schema_migrations ORDER BY version DESC LIMIT 1"
)


#: At most this many buckets in a gap-filled series (a year of hours is 8,784).
MAX_FILLED_BUCKETS = 100_000


def _series_args(
    sel: Selection, bucket_s: int, bbox: BBox | None, cell: int | None, fill: Backend | None = None
) -> tuple[bytes, dict[str, Any]]:
    if (bbox is None) == (cell is None):
        raise QueryError("give exactly one of bbox and cell")
    if bucket_s <= 0 or bucket_s % sel.window_s:
        raise QueryError(
            f"the bucket ({bucket_s} s) must be a positive multiple of the "
            f"window size ({sel.window_s} s)"
        )
    params = sel.params() | {"bucket_s": bucket_s}
    if fill is not None:
        start_ms = epoch_ms(sel.start)
        end_ms = epoch_ms(sel.end)
        buckets = -(-end_ms // (bucket_s * 1000)) - start_ms // (bucket_s * 1000)
        if buckets > MAX_FILLED_BUCKETS:
            raise QueryError(
                f"a gap-filled series of {buckets} buckets is too long (at most "
                f"{MAX_FILLED_BUCKETS}): choose a larger bucket or a shorter range"
            )
        params |= {"bucket_ms": bucket_s * 1000, "start_ms": start_ms, "end_ms": end_ms}
    by = "cell" if cell is not None else "bbox"
    if sel.corrected:
        check_calibrated(sel.metric)
    queries = (
        _FILLED_QUERIES[by, fill, sel.corrected]
        if fill is not None
        else (_SERIES_CELL_CORRECTED if sel.corrected else _SERIES_CELL_QUERY)
        if cell is not None
        else (_SERIES_BBOX_CORRECTED if sel.corrected else _SERIES_BBOX_QUERY)
    )
    if cell is not None:
        if not h3int.is_valid_cell(cell) or h3int.get_resolution(cell) != sel.resolution:
            raise QueryError(f"cell {cell:x} is not a valid H3 cell at resolution {sel.resolution}")
        return queries[sel.metric], params | {"cell": cell}
    assert bbox is not None
    return queries[sel.metric], params | bbox_params(bbox)


def _backend(row: tuple[Any, ...] | None) -> Backend:
    if row is None:
        raise QueryError("the database is not migrated (no schema_migrations rows)")
    return Backend(str(row[0]))


def time_series(
    conn: psycopg.Connection[Any],
    sel: Selection,
    bucket_s: int,
    *,
    bbox: BBox | None = None,
    cell: int | None = None,
    gapfill: bool = False,
) -> np.ndarray:
    """Per time bucket (``window_start_ms`` = bucket start) over one cell or a bbox's cells:
    statistics (``STATS_DTYPE``), sorted by time. ``bucket_s`` is a multiple of the window.

    Sparse by default: buckets without data (or withheld by the privacy thresholds) are
    left out. With ``gapfill`` every bucket from the one holding ``sel.start`` to the
    last before ``sel.end`` is there, those as empty buckets (``n`` 0, statistics NaN);
    the same output on TimescaleDB (``time_bucket_gapfill``) and plain PostgreSQL
    (``generate_series``)."""
    fill = _backend(conn.execute(_BACKEND_QUERY).fetchone()) if gapfill else None
    query, params = _series_args(sel, bucket_s, bbox, cell, fill)
    rows = conn.execute(query, params).fetchall()
    return to_stats(rows, sel, by_cell=False, window_s=bucket_s)


async def atime_series(
    conn: psycopg.AsyncConnection[Any],
    sel: Selection,
    bucket_s: int,
    *,
    bbox: BBox | None = None,
    cell: int | None = None,
    gapfill: bool = False,
) -> np.ndarray:
    """:func:`time_series` for an async connection."""
    fill = None
    if gapfill:
        fill = _backend(await (await conn.execute(_BACKEND_QUERY)).fetchone())
    query, params = _series_args(sel, bucket_s, bbox, cell, fill)
    cur = await conn.execute(query, params)
    return to_stats(await cur.fetchall(), sel, by_cell=False, window_s=bucket_s)
