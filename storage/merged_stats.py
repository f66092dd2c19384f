"""Statistics merged from the window partials of a selection's units.

Statistics are merged from the window partials in SQL (sums add, min / max take
the extreme, histograms add element-wise; :data:`MERGED`, over the units of
:data:`storage.selection.UNITS`) and derived in numpy by
``stream.core.summary.summarise`` (:func:`to_stats`), the same code the stream
uses, so mean, sample standard deviation, p50 / p95 from the histogram and LAeq on
energy mean one thing everywhere. :mod:`storage.cell_stats` merges them per cell,
:mod:`storage.time_series` per time bucket.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import numpy as np
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

from storage.exceptions import QueryError
from storage.selection import Selection
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE
from stream.core.summary import SUMMARY_DTYPE, summarise

#: Derived statistics of one cell (or one time bucket) with its coverage.
STATS_DTYPE = np.dtype(
    [
        *((name, SUMMARY_DTYPE[name]) for name in SUMMARY_DTYPE.names or ()),
        ("rides", "<i8"),  # distinct rides over the selection
        ("days", "<i8"),  # distinct days over the selection
        ("lat_deg", "<f8"),  # cell centre (NaN for a bbox time series)
        ("lon_deg", "<f8"),
        # Corrected values only (NaN for raw ones): the mean of the readings' correction
        # uncertainties, Σ u / n (storage.corrected_windows keeps Σ u in the energy slot).
        ("correction_u", "<f8"),
        # Each ride's weight wᵣ in the mean (its readings; its noise energy for noise),
        # summed over the selection: Σ wᵣ and Σ wᵣ², Kish's effective number of rides
        # (Σ wᵣ)² / Σ wᵣ² (api/stats.py). NaN where a presence row of the selection does
        # not know its ride's weight (stored before migrations/0112_presence_shares.sql).
        ("ride_weight", "<f8"),
        ("ride_weight_sq", "<f8"),
    ]
)

_INT32_MAX = 2**31 - 1

#: One column of query rows: a sequence of values or an array.
Column = Sequence[Any] | np.ndarray


def merged(prefix: LiteralString = "", *, hist: bool = True) -> LiteralString:
    """The merged partial columns of ``p``'s narrow columns named with ``prefix``
    (storage.cellwindows.metric_partials, pair_partials); ``hist=False``: the histogram
    column NULL, not merged (a covariate's: an interval needs its mean and spread only).

    Histograms are summed bin by bin with the built-in sum over the stored, cut form
    (storage.cellwindows: bin i is hist_counted[i - hist_offset], NULL outside the
    stored bins, which sum skips), in bigint: many windows together can exceed int4.
    The aggregate bikesense_hist_sum over dense histograms (migrations/0001_core.sql)
    runs a plpgsql loop per row after building each dense array, about 1.5 times the
    time of the whole merge over bench/bench_reads.py's 400 days of cells."""
    bins: LiteralString = ", ".join(
        "coalesce(sum(p."
        + prefix
        + "hist_counted["
        + str(i)
        + " - p."
        + prefix
        + "hist_offset]), 0)"
        for i in range(1, HIST_BINS + 1)
    )
    return (
        "\n    sum(p.{0}n), sum(p.{0}sum), sum(p.{0}sumsq), min(p.{0}min), max(p.{0}max),"
        "\n    sum(p.{0}energy), sum(p.{0}duration_s), max(p.{0}lamax_db), "
    ).replace("{0}", prefix) + ("ARRAY[" + bins + "]" if hist else "NULL::bigint[]")


MERGED: LiteralString = merged()

# {partials}: one metric's partials (storage.cellwindows.metric_partials), so every
# query built from it comes once per metric (storage.cellwindows.per_metric).
PARTIALS_IN_RANGE: LiteralString = """
    FROM {partials} p JOIN units u USING (cell, window_start)
    WHERE p.resolution = %(unit_res)s AND p.window_s = %(unit_window_s)s
      AND p.window_start >= %(start)s AND p.window_start < %(end)s"""

# Rides and days that measured the metric (bit int(Metric), stream.core.partials). The
# key of window_presence has the cell before the time (migrations/0102), so a range of
# times alone scans the presence of every window of the grain ever stored; naming the
# units' cells (an array, one index descent each) scans only the range's: an officer's
# hour at resolution 10 over bench/bench_reads.py's 31 days, 5,000 index pages read
# and 55 ms of PostgreSQL CPU before, 40 after, and it no longer grows with the history.
PRESENCE_IN_RANGE: LiteralString = """
    FROM window_presence pr JOIN units u USING (cell, window_start)
    WHERE pr.resolution = %(unit_res)s AND pr.window_s = %(unit_window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell = ANY (ARRAY(SELECT DISTINCT cell FROM units))
      AND (pr.metrics >> %(metric)s) & 1 = 1"""


def presence_by(key: LiteralString) -> LiteralString:
    """The CTEs ``per_ride`` and ``pres``: per ``key``, the distinct rides and days that
    measured the metric, and Σ wᵣ and Σ wᵣ² of the rides' weights (``{weight}``,
    storage.cellwindows.presence_weight) summed over the selection, both NULL if a
    presence row does not know its weight. A ride is one per key, whatever its rows'
    days: Σᵣ wᵣ² is taken as Σ over (ride, day) of w·Wᵣ, Wᵣ the ride's whole weight."""
    return (
        """
per_ride AS (
    SELECT key, ride_id, day, w, unknown, sum(w) OVER (PARTITION BY key, ride_id) AS ride_w
    FROM (SELECT """
        + key
        + """ AS key, pr.ride_id, pr.day, sum(pr.{weight})::float8 AS w,
                 bool_or(pr.{weight} IS NULL) AS unknown"""
        + PRESENCE_IN_RANGE
        + """ GROUP BY 1, 2, 3) g),
pres AS (
    SELECT key, count(DISTINCT ride_id) AS rides, count(DISTINCT day) AS days,
           CASE WHEN bool_or(unknown) THEN NULL ELSE sum(w) END AS ride_w,
           CASE WHEN bool_or(unknown) THEN NULL ELSE sum(w * ride_w) END AS ride_w_sq
    FROM per_ride GROUP BY key)"""
    )


def to_stats(
    rows: Sequence[tuple[Any, ...]], sel: Selection, *, by_cell: bool, window_s: int
) -> np.ndarray:
    """Rows of (key, merged partial columns, rides, days, lat, lon, Σ wᵣ, Σ wᵣ²) to
    ``STATS_DTYPE``;
    a row whose columns are NULL (a gap-filled bucket) becomes an empty one: ``n`` 0,
    ``rides`` and ``days`` 0, every statistic NaN."""
    present = np.array([row[1] is not None for row in rows], dtype=bool)
    if present.all():
        return stats_of(_columns_of(rows), sel, by_cell=by_cell, window_s=window_s)
    out = np.zeros(len(rows), dtype=STATS_DTYPE)
    for name in STATS_DTYPE.names or ():
        if STATS_DTYPE[name].kind == "f":
            out[name] = np.nan
    out["metric"], out["resolution"], out["window_s"] = sel.metric, sel.resolution, window_s
    out["cell" if by_cell else "window_start_ms"] = [row[0] for row in rows]
    out[present] = stats_of(
        _columns_of([row for row in rows if row[1] is not None]),
        sel,
        by_cell=by_cell,
        window_s=window_s,
    )
    return out


def _columns_of(rows: Sequence[tuple[Any, ...]]) -> list[Column]:
    return list(zip(*rows, strict=True)) if rows else [()] * 16


def stats_of(
    columns: Sequence[Column], sel: Selection, *, by_cell: bool, window_s: int
) -> np.ndarray:
    """``STATS_DTYPE`` of rows given column by column, every row with its partials: key,
    the merged partial columns (the histograms a list of bin lists or an array of rows),
    rides, days, lat, lon, Σ wᵣ, Σ wᵣ² (None or NaN where unknown), sorted by key.

    Column by column (numpy converts None to NaN in float columns): a record assigned per
    row cost about 12 µs, a sixth of an officer's hour of 1,300 cells at resolution 10 in
    the API (py-spy, bench/bench_reads.py's backlog)."""
    keys, n, s, ss, lo, hi, energy, duration, lamax, h = columns[:10]
    rides, days, lat, lon, ride_w, ride_w_sq = columns[10:16]
    rows = keys  # only their number is used below
    partials = np.zeros(len(rows), dtype=PARTIAL_DTYPE)
    partials["metric"], partials["resolution"], partials["window_s"] = (
        sel.metric,
        sel.resolution,
        window_s,
    )
    partials["cell" if by_cell else "window_start_ms"] = keys
    partials["n"], partials["sum"], partials["sumsq"] = n, s, ss
    partials["min"], partials["max"], partials["duration_s"], partials["lamax_db"] = (
        lo,
        hi,
        duration,
        lamax,
    )
    extra = np.zeros(
        len(rows),
        dtype=[
            ("rides", "<i8"),
            ("days", "<i8"),
            ("lat_deg", "<f8"),
            ("lon_deg", "<f8"),
            ("correction_u", "<f8"),
            ("ride_weight", "<f8"),
            ("ride_weight_sq", "<f8"),
        ],
    )
    extra["rides"], extra["days"], extra["lat_deg"], extra["lon_deg"] = rides, days, lat, lon
    extra["ride_weight"], extra["ride_weight_sq"] = ride_w, ride_w_sq
    if sel.corrected:
        # Corrected values keep Σ u in the energy slot (storage.corrected_windows).
        u_sum = np.array(energy, dtype=np.float64)
        count = partials["n"].astype(np.float64)
        extra["correction_u"] = np.divide(
            u_sum, count, out=np.full(len(rows), np.nan), where=count != 0
        )
    else:
        partials["energy"] = energy
        extra["correction_u"] = np.nan
    hist = np.array(h, dtype=np.int64).reshape(len(rows), HIST_BINS)  # a copy: scaled below
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


#: A merged histogram as PostgreSQL sends an ``int8[]`` in binary (``array_send``): the
#: dimensions, flags and element type, then each bin's length and big-endian value.
HIST_WIRE = np.dtype(
    [
        ("ndim", ">i4"),
        ("has_null", ">i4"),
        ("element_oid", ">i4"),
        ("size", ">i4"),
        ("lower_bound", ">i4"),
        ("bins", [("length", ">i4"), ("value", ">i8")], (HIST_BINS,)),
    ]
)
_INT8_OID = 20
INT8_ARRAY_OID = pg_types["int8"].array_oid
_NOT_HISTOGRAMS = f"merged histograms are not one-dimensional arrays of {HIST_BINS} bigints"


def hists_of_wire(arrays: Sequence[bytes]) -> np.ndarray:
    """Merged histograms (:func:`merged`) received as binary ``int8[]`` bytes (the
    loader of :class:`RawInt8Arrays`) as an int64 array of ``HIST_BINS`` columns: one
    ``frombuffer`` instead of a Python int per bin (64 per cell of a pair)."""
    try:
        wire = np.frombuffer(b"".join(arrays), dtype=HIST_WIRE)
    except ValueError as exc:
        raise QueryError(_NOT_HISTOGRAMS) from exc
    if len(wire) != len(arrays):
        raise QueryError(_NOT_HISTOGRAMS)
    check_hists(wire)
    return wire["bins"]["value"].astype(np.int64)


def check_hists(wire: np.ndarray) -> None:
    """Raise QueryError unless every one of ``wire`` (``HIST_WIRE``) holds HIST_BINS
    bigints, none NULL."""
    ok = (
        bool(np.all(wire["ndim"] == 1))
        and bool(np.all(wire["has_null"] == 0))
        and bool(np.all(wire["element_oid"] == _INT8_OID))
        and bool(np.all(wire["size"] == HIST_BINS))
        and bool(np.all(wire["bins"]["length"] == 8))
    )
    if not ok:  # a bug in the query, not bad input
        raise QueryError(_NOT_HISTOGRAMS)


class RawInt8Arrays(Loader):
    """Loads a binary ``int8[]`` as its bytes, for :func:`hists_of_wire`."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def raw_hists(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
    """Make ``cursor`` load ``int8[]`` columns as :class:`RawInt8Arrays` bytes."""
    cursor.adapters.register_loader(INT8_ARRAY_OID, RawInt8Arrays)


@dataclass(frozen=True, slots=True)
class NumberedQuery:
    """A query whose named parameters ``%(name)s`` are numbered ``$1``, ``$2``, ... in the
    order of :attr:`names`, for a raw cursor (``psycopg.RawCursor``): no conversion per
    execution."""

    sql: bytes
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The values of ``params`` in the order of the numbers."""
        missing = [name for name in self.names if name not in params]
        if missing:  # a bug in the caller, not bad input
            raise QueryError(f"the query needs parameters {', '.join(missing)}")
        return [params[name] for name in self.names]


_NAMED = re.compile(rb"%\((\w+)\)s")


@functools.lru_cache(maxsize=256)
def numbered(query: bytes) -> NumberedQuery:
    """``query`` (bytes with ``%(name)s`` parameters and no other ``%``) as a
    :class:`NumberedQuery`; each name keeps one number wherever it comes."""
    names: list[str] = []

    def number(match: re.Match[bytes]) -> bytes:
        name = match.group(1).decode()
        if name not in names:
            names.append(name)
        return b"$%d" % (names.index(name) + 1)

    sql_ = _NAMED.sub(number, query)
    if b"%" in sql_:
        raise QueryError("a query for numbered parameters has a % that names no parameter")
    return NumberedQuery(sql_, tuple(names))


# The rows the cells queries of storage.cell_stats and storage.long_cells return from
# their ``agg`` and ``pres`` CTEs, in the shape storage.cell_stats reads.
CELL_ROWS: LiteralString = """
SELECT agg.*, NULL AS rides, NULL AS days, c.lat_deg, c.lon_deg, NULL AS ride_w,
       NULL AS ride_w_sq
FROM agg JOIN h3_cells c ON c.cell = agg.key
UNION ALL
SELECT key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, rides, days, NULL, NULL,
       ride_w, ride_w_sq
FROM pres WHERE days >= %(min_days)s"""
