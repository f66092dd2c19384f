"""Reads for the API: cell statistics in a bbox and time series.

Statistics are merged from the window partials in SQL (sums add, min / max take
the extreme, histograms add element-wise) and derived in numpy by
``stream.core.summary.summarise``, the same code the stream uses, so mean,
sample standard deviation, p50 / p95 from the histogram and LAeq on energy
mean one thing everywhere.

Privacy (docs/design.md decision 4): a cell-window contributes only if at least
``min_rides`` distinct rides passed through it, and a cell (or time bucket) is
returned only if it was seen on at least ``min_days`` distinct days. Both
default to 0 for internal use; the public API passes its k.

Every function comes twice: for ``psycopg.Connection`` and, prefixed with
``a``, for ``psycopg.AsyncConnection``. They share the SQL and the conversions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage.cellwindows import per_metric
from storage.exceptions import QueryError
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE, Metric
from stream.core.summary import SUMMARY_DTYPE, summarise

#: Derived statistics of one cell (or one time bucket) with its coverage.
STATS_DTYPE = np.dtype([
    *((name, SUMMARY_DTYPE[name]) for name in SUMMARY_DTYPE.names or ()),
    ("rides", "<i8"),  # distinct rides over the selection
    ("days", "<i8"),  # distinct days over the selection
    ("lat_deg", "<f8"),  # cell centre (NaN for a bbox time series)
    ("lon_deg", "<f8"),
])

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class BBox:
    """WGS84 bounds; ``west > east`` means the box crosses the antimeridian."""

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        if not -90 <= self.south <= self.north <= 90:
            raise QueryError(f"bbox latitudes must satisfy -90 <= south <= north <= 90 "
                             f"(got south={self.south}, north={self.north})")
        if not (-180 <= self.west <= 180 and -180 <= self.east <= 180):
            raise QueryError(f"bbox longitudes must be within -180..180 "
                             f"(got west={self.west}, east={self.east})")


def check_time_range(start: datetime, end: datetime) -> None:
    """Raise QueryError unless ``start < end``, both timezone-aware."""
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("start and end must be timezone-aware datetimes")
    if not start < end:
        raise QueryError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which windows a query merges: one metric, resolution and window size, a time range."""

    metric: Metric
    resolution: int
    window_s: int
    start: datetime  # windows starting at or after this ...
    end: datetime  # ... and before this
    min_rides: int = 0  # k: distinct rides a cell-window needs to count
    min_days: int = 0  # distinct days a cell / bucket needs to be returned

    def __post_init__(self) -> None:
        check_time_range(self.start, self.end)
        if not 0 <= self.resolution <= 15:
            raise QueryError(f"H3 resolution must be 0..15 (got {self.resolution})")
        if self.window_s <= 0:
            raise QueryError(f"window size must be positive (got {self.window_s} s)")
        if self.min_rides < 0 or self.min_days < 0:
            raise QueryError("min_rides and min_days cannot be negative")

    def params(self) -> dict[str, Any]:
        return {"metric": int(self.metric), "res": self.resolution, "window_s": self.window_s,
                "start": self.start, "end": self.end, "k": self.min_rides,
                "min_days": self.min_days}


def _bbox_params(bbox: BBox) -> dict[str, Any]:
    return {"west": bbox.west, "south": bbox.south, "east": bbox.east, "north": bbox.north}


_WANTED_BBOX: LiteralString = """
wanted AS (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND CASE WHEN %(west)s <= %(east)s THEN lon_deg BETWEEN %(west)s AND %(east)s
               ELSE lon_deg >= %(west)s OR lon_deg <= %(east)s END
)"""

_WANTED_CELL: LiteralString = "wanted AS (SELECT %(cell)s::bigint AS cell)"

# The cell-windows with at least k distinct rides, from the counts the writer keeps
# (migrations/0004_window_rides.sql) rather than counting presence rows per request:
# 30 days of a town's largest zoom-13 tile as cells took 750 ms that way, 470 this way.
_PASSING: LiteralString = """
passing AS (
    SELECT r.cell, r.window_start
    FROM window_rides r
    WHERE r.resolution = %(res)s AND r.window_s = %(window_s)s
      AND r.window_start >= %(start)s AND r.window_start < %(end)s
      AND r.cell IN (SELECT cell FROM wanted)
      AND r.rides >= %(k)s
)"""

_MERGED: LiteralString = """
    sum(p.n), sum(p.sum), sum(p.sumsq), min(p.min), max(p.max),
    sum(p.energy), sum(p.duration_s), max(p.lamax_db), bikesense_hist_sum(p.hist)"""

# {partials}: one metric's partials (storage.cellwindows.metric_partials), so every
# query below comes once per metric (storage.cellwindows.per_metric).
_PARTIALS_IN_RANGE: LiteralString = """
    FROM {partials} p JOIN passing USING (cell, window_start)
    WHERE p.resolution = %(res)s AND p.window_s = %(window_s)s
      AND p.window_start >= %(start)s AND p.window_start < %(end)s"""

_PRESENCE_IN_RANGE: LiteralString = """
    FROM window_presence pr JOIN passing USING (cell, window_start)
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s"""

_CELLS_QUERY = per_metric(
    "WITH " + _WANTED_BBOX + "," + _PASSING + """,
agg AS (SELECT p.cell AS key, """ + _MERGED + _PARTIALS_IN_RANGE + """ GROUP BY p.cell),
pres AS (SELECT pr.cell AS key, count(DISTINCT pr.ride_id) AS rides,
                count(DISTINCT pr.day) AS days""" + _PRESENCE_IN_RANGE + """ GROUP BY pr.cell)
SELECT agg.*, pres.rides, pres.days, c.lat_deg, c.lon_deg
FROM agg JOIN pres USING (key) JOIN h3_cells c ON c.cell = agg.key
WHERE pres.days >= %(min_days)s
ORDER BY agg.key""")

_BUCKET: LiteralString = (
    "(extract(epoch FROM date_bin(make_interval(secs => %(bucket_s)s), {col},"
    " timestamptz '1970-01-01 00:00:00+00')) * 1000)::bigint")


def _series_query(wanted: LiteralString) -> dict[Metric, bytes]:
    p_bucket: LiteralString = _BUCKET.replace("{col}", "p.window_start")
    pr_bucket: LiteralString = _BUCKET.replace("{col}", "pr.window_start")
    return per_metric(
        "WITH " + wanted + "," + _PASSING + """,
agg AS (SELECT """ + p_bucket + " AS key, " + _MERGED + _PARTIALS_IN_RANGE + """ GROUP BY 1),
pres AS (SELECT """ + pr_bucket + """ AS key, count(DISTINCT pr.ride_id) AS rides,
                count(DISTINCT pr.day) AS days""" + _PRESENCE_IN_RANGE + """ GROUP BY 1)
SELECT agg.*, pres.rides, pres.days, 'NaN'::float8, 'NaN'::float8
FROM agg JOIN pres USING (key)
WHERE pres.days >= %(min_days)s
ORDER BY agg.key""")


_SERIES_BBOX_QUERY = _series_query(_WANTED_BBOX)
_SERIES_CELL_QUERY = _series_query(_WANTED_CELL)


def _stats(rows: Sequence[tuple[Any, ...]], sel: Selection, *, by_cell: bool,
           window_s: int) -> np.ndarray:
    """Rows of (key, merged partial columns, rides, days, lat, lon) to ``STATS_DTYPE``."""
    partials = np.zeros(len(rows), dtype=PARTIAL_DTYPE)
    extra = np.zeros(len(rows), dtype=[("rides", "<i8"), ("days", "<i8"),
                                       ("lat_deg", "<f8"), ("lon_deg", "<f8")])
    hist = np.zeros((len(rows), HIST_BINS), dtype=np.int64)
    for i, (key, n, s, ss, lo, hi, energy, duration, lamax, h, rides, days, lat,
            lon) in enumerate(rows):
        partials[i] = (sel.metric, sel.resolution, key if by_cell else 0, window_s,
                       0 if by_cell else key, n, s, ss,
                       np.nan if lo is None else lo, np.nan if hi is None else hi,
                       energy, duration, np.nan if lamax is None else lamax, 0)
        hist[i] = h
        extra[i] = (rides, days, lat, lon)
    # Histograms are int32 in the partial contract; a merge over a long range could
    # exceed that, and only the shape matters for percentiles, so scale it down.
    top = int(hist.max(initial=0))
    if top > _INT32_MAX:
        hist //= math.ceil(top / _INT32_MAX)
    partials["hist"] = hist
    summary = summarise(partials)  # sorted by key, as the rows are
    key = "cell" if by_cell else "window_start_ms"
    if not np.array_equal(summary[key], partials[key]):
        raise QueryError(f"rows were not unique and sorted by {key}")  # a bug, not bad input
    out = np.zeros(len(rows), dtype=STATS_DTYPE)
    for name in SUMMARY_DTYPE.names or ():
        out[name] = summary[name]
    for name in extra.dtype.names or ():
        out[name] = extra[name]
    return out


def _series_args(sel: Selection, bucket_s: int, bbox: BBox | None,
                 cell: int | None) -> tuple[bytes, dict[str, Any]]:
    if (bbox is None) == (cell is None):
        raise QueryError("give exactly one of bbox and cell")
    if bucket_s <= 0 or bucket_s % sel.window_s:
        raise QueryError(f"the bucket ({bucket_s} s) must be a positive multiple of the "
                         f"window size ({sel.window_s} s)")
    params = sel.params() | {"bucket_s": bucket_s}
    if cell is not None:
        if not h3int.is_valid_cell(cell) or h3int.get_resolution(cell) != sel.resolution:
            raise QueryError(f"cell {cell:x} is not a valid H3 cell at resolution "
                             f"{sel.resolution}")
        return _SERIES_CELL_QUERY[sel.metric], params | {"cell": cell}
    assert bbox is not None
    return _SERIES_BBOX_QUERY[sel.metric], params | _bbox_params(bbox)


def cell_stats(conn: psycopg.Connection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """Per cell whose centre is in ``bbox``: statistics over the selection (``STATS_DTYPE``),
    sorted by cell."""
    rows = conn.execute(_CELLS_QUERY[sel.metric], sel.params() | _bbox_params(bbox)).fetchall()
    return _stats(rows, sel, by_cell=True, window_s=sel.window_s)


def time_series(conn: psycopg.Connection[Any], sel: Selection, bucket_s: int, *,
                bbox: BBox | None = None, cell: int | None = None) -> np.ndarray:
    """Per time bucket (``window_start_ms`` = bucket start) over one cell or a bbox's cells:
    statistics (``STATS_DTYPE``), sorted by time. ``bucket_s`` is a multiple of the window."""
    query, params = _series_args(sel, bucket_s, bbox, cell)
    rows = conn.execute(query, params).fetchall()
    return _stats(rows, sel, by_cell=False, window_s=bucket_s)


async def acell_stats(conn: psycopg.AsyncConnection[Any], sel: Selection,
                      bbox: BBox) -> np.ndarray:
    """:func:`cell_stats` for an async connection."""
    cur = await conn.execute(_CELLS_QUERY[sel.metric], sel.params() | _bbox_params(bbox))
    return _stats(await cur.fetchall(), sel, by_cell=True, window_s=sel.window_s)


async def atime_series(conn: psycopg.AsyncConnection[Any], sel: Selection, bucket_s: int, *,
                       bbox: BBox | None = None, cell: int | None = None) -> np.ndarray:
    """:func:`time_series` for an async connection."""
    query, params = _series_args(sel, bucket_s, bbox, cell)
    cur = await conn.execute(query, params)
    return _stats(await cur.fetchall(), sel, by_cell=False, window_s=bucket_s)
