"""Reads for the API: cell statistics in a bbox and time series.

Statistics are merged from the window partials in SQL (sums add, min / max take
the extreme, histograms add element-wise) and derived in numpy by
``stream.core.summary.summarise``, the same code the stream uses, so mean,
sample standard deviation, p50 / p95 from the histogram and LAeq on energy
mean one thing everywhere.

Privacy (docs/design.md decision 4): a cell-window contributes only if at least
``min_rides`` distinct rides measured the selection's metric in it, and a cell (or
time bucket) is returned only if it was seen on at least ``min_days`` distinct days.
Both default to 0 for internal use; the public API passes its k.

Closed under differencing (docs/privacy.md, "Threat model"): the threshold is applied
to *units*, cell-windows of one grain (``Selection.unit_resolution`` and
``unit_window_s``: for the public, the finest resolution and its finest window), and
every figure, at any coarser resolution, window, bucket, range or bbox, is merged from
the units that passed and nothing else. A coarse cell-window is never judged on its
own: if it were, a parent hour passing k while one child fails would give that child
by subtraction. Any sum or difference of figures is then a merge of passing units,
each of which the caller may see anyway. Units are found by H3 index range: a cell's
children at a finer resolution are the integers between its index with the finer
resolution and their digits all 0 and all 7 (the H3 index layout, h3geo.org/docs/
library/index/cell), so no H3 extension is needed in the database.

Every function comes twice: for ``psycopg.Connection`` and, prefixed with
``a``, for ``psycopg.AsyncConnection``. They share the SQL and the conversions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage.cellwindows import per_metric
from storage.exceptions import QueryError
from storage.migrate import Backend
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE, Metric
from stream.core.summary import SUMMARY_DTYPE, summarise

#: Derived statistics of one cell (or one time bucket) with its coverage.
STATS_DTYPE = np.dtype(
    [
        *((name, SUMMARY_DTYPE[name]) for name in SUMMARY_DTYPE.names or ()),
        ("rides", "<i8"),  # distinct rides over the selection
        ("days", "<i8"),  # distinct days over the selection
        ("lat_deg", "<f8"),  # cell centre (NaN for a bbox time series)
        ("lon_deg", "<f8"),
    ]
)

_INT32_MAX = 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BBox:
    """WGS84 bounds; ``west > east`` means the box crosses the antimeridian."""

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        if not -90 <= self.south <= self.north <= 90:
            raise QueryError(
                f"bbox latitudes must satisfy -90 <= south <= north <= 90 "
                f"(got south={self.south}, north={self.north})"
            )
        if not (-180 <= self.west <= 180 and -180 <= self.east <= 180):
            raise QueryError(
                f"bbox longitudes must be within -180..180 (got west={self.west}, east={self.east})"
            )


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
    min_rides: int = 0  # k: distinct rides that measured the metric, per unit
    min_days: int = 0  # distinct days a cell / bucket needs to be returned
    # The grain k applies to and figures are merged from (None: the selection's own).
    unit_resolution: int | None = None
    unit_window_s: int | None = None

    def __post_init__(self) -> None:
        check_time_range(self.start, self.end)
        if not 0 <= self.resolution <= 15:
            raise QueryError(f"H3 resolution must be 0..15 (got {self.resolution})")
        if self.window_s <= 0:
            raise QueryError(f"window size must be positive (got {self.window_s} s)")
        if self.min_rides < 0 or self.min_days < 0:
            raise QueryError("min_rides and min_days cannot be negative")
        if not self.resolution <= self.units[0] <= 15:
            raise QueryError(
                f"units must be of the selection's resolution ({self.resolution}) "
                f"or finer, up to 15 (got {self.units[0]})"
            )
        if self.units[1] <= 0 or self.window_s % self.units[1]:
            raise QueryError(
                f"the window size ({self.window_s} s) must be a multiple of the "
                f"units' ({self.units[1]} s)"
            )

    @property
    def units(self) -> tuple[int, int]:
        """(resolution, window size) of the cell-windows k applies to."""
        return (
            self.resolution if self.unit_resolution is None else self.unit_resolution,
            self.window_s if self.unit_window_s is None else self.unit_window_s,
        )

    def params(self) -> dict[str, Any]:
        unit_res, unit_window_s = self.units
        # The bits of the H3 digits between the two resolutions (3 bits a digit, digit
        # r at bit 3·(15 − r)): a cell's children at unit_res vary only in these.
        digits = ((1 << 3 * (15 - self.resolution)) - 1) & ~((1 << 3 * (15 - unit_res)) - 1)
        return {
            "metric": int(self.metric),
            "res": self.resolution,
            "window_s": self.window_s,
            "start": self.start,
            "end": self.end,
            "k": self.min_rides,
            "min_days": self.min_days,
            "unit_res": unit_res,
            "unit_window_s": unit_window_s,
            "digits": digits,
        }


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

# The units (cell-windows of the selection's unit grain) under each wanted cell that
# hold at least k distinct rides that measured the metric, from the counts the writer
# keeps (migrations/0004_window_rides.sql, 0103_metric_rides.sql) rather than counting
# presence rows per request: 30 days of a town's largest zoom-13 tile as cells took
# 750 ms that way, 470 this way. metric_rides is NULL on rows counted before 0103.
# A range scan of the key per wanted cell (LATERAL, OFFSET 0 so it is not pulled up):
# joined on the range instead, the planner read every unit of the town in the time
# range and compared each with every wanted cell (1.2 million comparisons, 290 ms, for
# a zoom-12 tile of 14 days of bench/bench_tiles.py's town).
UNITS: LiteralString = """
units AS (
    SELECT w.cell AS parent, r.cell, r.window_start, r.days
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT ((w.cell & ~(15::bigint << 52)) | (%(unit_res)s::bigint << 52))
               & ~%(digits)s::bigint AS lo) b
    CROSS JOIN LATERAL (
        SELECT r.cell, r.window_start, r.days
        FROM window_rides r
        WHERE r.resolution = %(unit_res)s AND r.window_s = %(unit_window_s)s
          AND r.cell BETWEEN b.lo AND b.lo | %(digits)s::bigint
          AND r.window_start >= %(start)s AND r.window_start < %(end)s
          AND coalesce(r.metric_rides[%(metric)s], r.rides) >= %(k)s
        OFFSET 0) r
)"""

_MERGED: LiteralString = """
    sum(p.n), sum(p.sum), sum(p.sumsq), min(p.min), max(p.max),
    sum(p.energy), sum(p.duration_s), max(p.lamax_db), bikesense_hist_sum(p.hist)"""

# {partials}: one metric's partials (storage.cellwindows.metric_partials), so every
# query below comes once per metric (storage.cellwindows.per_metric).
_PARTIALS_IN_RANGE: LiteralString = """
    FROM {partials} p JOIN units u USING (cell, window_start)
    WHERE p.resolution = %(unit_res)s AND p.window_s = %(unit_window_s)s
      AND p.window_start >= %(start)s AND p.window_start < %(end)s"""

# Rides and days that measured the metric (bit int(Metric), stream.core.partials).
_PRESENCE_IN_RANGE: LiteralString = """
    FROM window_presence pr JOIN units u USING (cell, window_start)
    WHERE pr.resolution = %(unit_res)s AND pr.window_s = %(unit_window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND (pr.metrics >> %(metric)s) & 1 = 1"""

_CELLS_QUERY = per_metric(
    "WITH "
    + _WANTED_BBOX
    + ","
    + UNITS
    + """,
agg AS (SELECT u.parent AS key, """
    + _MERGED
    + _PARTIALS_IN_RANGE
    + """ GROUP BY u.parent),
pres AS (SELECT u.parent AS key, count(DISTINCT pr.ride_id) AS rides,
                count(DISTINCT pr.day) AS days"""
    + _PRESENCE_IN_RANGE
    + """ GROUP BY u.parent)
SELECT agg.*, NULL AS rides, NULL AS days, c.lat_deg, c.lon_deg
FROM agg JOIN h3_cells c ON c.cell = agg.key
UNION ALL
SELECT key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, rides, days, NULL, NULL
FROM pres WHERE days >= %(min_days)s"""
)
# The partials (agg) and the rides and days (pres) of each cell come as two sets of
# rows, joined by key in Python (_joined_by_key), not in SQL: the planner cannot see
# that every unit has one cell_windows row, estimates agg at one row and joins pres to
# it in a nested loop that aggregates pres again for every cell (1.1 s for an hour of
# 1,422 cells at resolution 10, bench/bench_reads.py's backlog; 44 ms this way).


def _joined_by_key(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows of a cells query as (key, partials..., rides, days, lat, lon), sorted by
    key: each partials row with its cell's rides and days; a cell without them (seen
    on fewer than the selection's days) left out."""
    presence = {row[0]: row[10:12] for row in rows if row[1] is None}
    return sorted(
        (
            row[:10] + presence[row[0]] + row[12:]
            for row in rows
            if row[1] is not None and row[0] in presence
        ),
        key=lambda row: row[0],
    )


_BUCKET: LiteralString = (
    "(extract(epoch FROM date_bin(make_interval(secs => %(bucket_s)s), {col},"
    " timestamptz '1970-01-01 00:00:00+00')) * 1000)::bigint"
)


def _series_query(wanted: LiteralString) -> dict[Metric, bytes]:
    p_bucket: LiteralString = _BUCKET.replace("{col}", "p.window_start")
    pr_bucket: LiteralString = _BUCKET.replace("{col}", "pr.window_start")
    return per_metric(
        "WITH "
        + wanted
        + ","
        + UNITS
        + """,
agg AS (SELECT """
        + p_bucket
        + " AS key, "
        + _MERGED
        + _PARTIALS_IN_RANGE
        + """ GROUP BY 1),
pres AS (SELECT """
        + pr_bucket
        + """ AS key, count(DISTINCT pr.ride_id) AS rides,
                count(DISTINCT pr.day) AS days"""
        + _PRESENCE_IN_RANGE
        + """ GROUP BY 1)
SELECT agg.*, pres.rides, pres.days, 'NaN'::float8, 'NaN'::float8
FROM agg JOIN pres USING (key)
WHERE pres.days >= %(min_days)s
ORDER BY agg.key"""
    )


_SERIES_BBOX_QUERY = _series_query(_WANTED_BBOX)
_SERIES_CELL_QUERY = _series_query(_WANTED_CELL)

# Gap-filled series: every bucket from the one holding ``start`` to the last before
# ``end``, an empty one (NULL columns) where the sparse series has no row, so a chart
# shows an hour without data as a gap. Buckets are whole multiples of bucket_ms from
# 1970-01-01, as _BUCKET's date_bin. TimescaleDB fills them with time_bucket_gapfill
# (its integer form: origin 0, the same buckets); plain PostgreSQL joins the series to
# generate_series. One row per bucket either way, so the aggregates are identities.
_SERIES_COLUMNS: LiteralString = (
    "s.n, s.sum, s.sumsq, s.min, s.max, s.energy, s.duration_s, s.lamax_db, s.hist,"
    " s.rides, s.days, s.lat_deg, s.lon_deg"
)
_SPARSE_AS: LiteralString = (
    "(key, n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist, rides, days,"
    " lat_deg, lon_deg)"
)
_GAPFILL_TIMESCALE: LiteralString = (
    "SELECT time_bucket_gapfill(%(bucket_ms)s::bigint, s.key, %(start_ms)s::bigint,"
    " %(end_ms)s::bigint) AS bucket, max(s.n), max(s.sum), max(s.sumsq), max(s.min),"
    " max(s.max), max(s.energy), max(s.duration_s), max(s.lamax_db), max(s.hist),"
    " max(s.rides), max(s.days), max(s.lat_deg), max(s.lon_deg)"
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


#: (cell or bbox, backend) -> the gap-filled query of each metric.
_FILLED_QUERIES = {
    (by, backend): _filled(sparse, fill)
    for by, sparse in (("cell", _SERIES_CELL_QUERY), ("bbox", _SERIES_BBOX_QUERY))
    for backend, fill in ((Backend.TIMESCALE, _GAPFILL_TIMESCALE), (Backend.PLAIN, _GAPFILL_PLAIN))
}

_BACKEND_QUERY: LiteralString = (
    "SELECT backend FROM schema_migrations ORDER BY version DESC LIMIT 1"
)


def _stats(
    rows: Sequence[tuple[Any, ...]], sel: Selection, *, by_cell: bool, window_s: int
) -> np.ndarray:
    """Rows of (key, merged partial columns, rides, days, lat, lon) to ``STATS_DTYPE``;
    a row whose columns are NULL (a gap-filled bucket) becomes an empty one: ``n`` 0,
    ``rides`` and ``days`` 0, every statistic NaN."""
    present = np.array([row[1] is not None for row in rows], dtype=bool)
    if present.all():
        return _present_stats(rows, sel, by_cell=by_cell, window_s=window_s)
    out = np.zeros(len(rows), dtype=STATS_DTYPE)
    for name in STATS_DTYPE.names or ():
        if STATS_DTYPE[name].kind == "f":
            out[name] = np.nan
    out["metric"], out["resolution"], out["window_s"] = sel.metric, sel.resolution, window_s
    out["cell" if by_cell else "window_start_ms"] = [row[0] for row in rows]
    out[present] = _present_stats(
        [row for row in rows if row[1] is not None], sel, by_cell=by_cell, window_s=window_s
    )
    return out


def _present_stats(
    rows: Sequence[tuple[Any, ...]], sel: Selection, *, by_cell: bool, window_s: int
) -> np.ndarray:
    partials = np.zeros(len(rows), dtype=PARTIAL_DTYPE)
    extra = np.zeros(
        len(rows), dtype=[("rides", "<i8"), ("days", "<i8"), ("lat_deg", "<f8"), ("lon_deg", "<f8")]
    )
    hist = np.zeros((len(rows), HIST_BINS), dtype=np.int64)
    for i, (key, n, s, ss, lo, hi, energy, duration, lamax, h, rides, days, lat, lon) in enumerate(
        rows
    ):
        partials[i] = (
            sel.metric,
            sel.resolution,
            key if by_cell else 0,
            window_s,
            0 if by_cell else key,
            n,
            s,
            ss,
            np.nan if lo is None else lo,
            np.nan if hi is None else hi,
            energy,
            duration,
            np.nan if lamax is None else lamax,
            0,
        )
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
        start_ms = _ms(sel.start)
        end_ms = _ms(sel.end)
        buckets = -(-end_ms // (bucket_s * 1000)) - start_ms // (bucket_s * 1000)
        if buckets > MAX_FILLED_BUCKETS:
            raise QueryError(
                f"a gap-filled series of {buckets} buckets is too long (at most "
                f"{MAX_FILLED_BUCKETS}): choose a larger bucket or a shorter range"
            )
        params |= {"bucket_ms": bucket_s * 1000, "start_ms": start_ms, "end_ms": end_ms}
    by = "cell" if cell is not None else "bbox"
    queries = (
        _FILLED_QUERIES[by, fill]
        if fill is not None
        else _SERIES_CELL_QUERY
        if cell is not None
        else _SERIES_BBOX_QUERY
    )
    if cell is not None:
        if not h3int.is_valid_cell(cell) or h3int.get_resolution(cell) != sel.resolution:
            raise QueryError(f"cell {cell:x} is not a valid H3 cell at resolution {sel.resolution}")
        return queries[sel.metric], params | {"cell": cell}
    assert bbox is not None
    return queries[sel.metric], params | _bbox_params(bbox)


def _ms(instant: datetime) -> int:
    """Milliseconds since 1970, exact (a float timestamp() could be off by one)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _backend(row: tuple[Any, ...] | None) -> Backend:
    if row is None:
        raise QueryError("the database is not migrated (no schema_migrations rows)")
    return Backend(str(row[0]))


def cell_stats(conn: psycopg.Connection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """Per cell whose centre is in ``bbox``: statistics over the selection (``STATS_DTYPE``),
    sorted by cell."""
    rows = conn.execute(_CELLS_QUERY[sel.metric], sel.params() | _bbox_params(bbox)).fetchall()
    return _stats(_joined_by_key(rows), sel, by_cell=True, window_s=sel.window_s)


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
    return _stats(rows, sel, by_cell=False, window_s=bucket_s)


async def acell_stats(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """:func:`cell_stats` for an async connection."""
    cur = await conn.execute(_CELLS_QUERY[sel.metric], sel.params() | _bbox_params(bbox))
    return _stats(_joined_by_key(await cur.fetchall()), sel, by_cell=True, window_s=sel.window_s)


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
    return _stats(await cur.fetchall(), sel, by_cell=False, window_s=bucket_s)


# ---------------------------------------------------------------- withheld for privacy

#: The grain at which the public is told that data was withheld: an H3 cell of this
#: resolution (about 5 km², a district) and a UTC day, fixed whatever the view.
WITHHELD_RESOLUTION = 7
_DAY = 86_400

# Whether any (district, UTC day) among the given districts and the days around the
# selection's range holds units below k (the public units that were held back) that
# together saw at least k distinct rides measuring the metric. Each (district, day) is
# judged whole, never the part in a view, so the answer is an OR of fixed, k-anonymous
# flags: a smaller view or a shorter period cannot isolate a unit or a ride
# (docs/privacy.md, "Withheld").
_WITHHELD_QUERY: LiteralString = """
WITH districts AS (SELECT unnest(%(districts)s::bigint[]) AS district),
held AS (
    SELECT d.district, r.cell, r.window_start
    FROM districts d
    CROSS JOIN LATERAL (
        SELECT ((d.district & ~(15::bigint << 52)) | (%(unit_res)s::bigint << 52))
               & ~%(digits)s::bigint AS lo) b
    CROSS JOIN LATERAL (
        SELECT r.cell, r.window_start
        FROM window_rides r
        WHERE r.resolution = %(unit_res)s AND r.window_s = %(unit_window_s)s
          AND r.cell BETWEEN b.lo AND b.lo | %(digits)s::bigint
          AND r.window_start >= %(day_start)s AND r.window_start < %(day_end)s
          AND coalesce(r.metric_rides[%(metric)s], r.rides) < %(k)s
        OFFSET 0) r
)
SELECT EXISTS (
    SELECT 1
    FROM held h
    JOIN window_presence pr ON pr.cell = h.cell AND pr.window_start = h.window_start
    WHERE pr.resolution = %(unit_res)s AND pr.window_s = %(unit_window_s)s
      AND (pr.metrics >> %(metric)s) & 1 = 1
    GROUP BY h.district, date_bin('1 day', h.window_start, timestamptz '1970-01-01 00:00:00+00')
    HAVING count(DISTINCT pr.ride_id) >= %(k)s
)"""


def withheld_districts(bbox: BBox) -> list[int]:
    """The districts (H3 cells of :data:`WITHHELD_RESOLUTION`) a bbox overlaps, and
    those of its corners and centre (for a box of no area)."""
    boxes = (
        [(bbox.west, bbox.east)]
        if bbox.west <= bbox.east
        else [(bbox.west, 180.0), (-180.0, bbox.east)]
    )
    cells: set[int] = set()
    for west, east in boxes:
        ring = [(bbox.south, west), (bbox.south, east), (bbox.north, east), (bbox.north, west)]
        cells.update(
            h3int.polygon_to_cells_experimental(
                h3int.LatLngPoly(ring), WITHHELD_RESOLUTION, contain="overlap"
            )
        )
        for lat, lon in [*ring, ((bbox.south + bbox.north) / 2, (west + east) / 2)]:
            cells.add(h3int.latlng_to_cell(lat, lon, WITHHELD_RESOLUTION))
    return sorted(cells)


def _withheld_args(sel: Selection, districts: Sequence[int]) -> dict[str, Any]:
    unit_res, unit_window_s = sel.units
    digits = ((1 << 3 * (15 - WITHHELD_RESOLUTION)) - 1) & ~((1 << 3 * (15 - unit_res)) - 1)
    day_start = _ms(sel.start) // 1000 // _DAY * _DAY
    day_end = -(-(_ms(sel.end) // 1000) // _DAY) * _DAY
    return {
        "districts": list(districts),
        "metric": int(sel.metric),
        "k": sel.min_rides,
        "unit_res": unit_res,
        "unit_window_s": unit_window_s,
        "digits": digits,
        "day_start": datetime.fromtimestamp(day_start, UTC),
        "day_end": datetime.fromtimestamp(day_end, UTC),
    }


def withheld(conn: psycopg.Connection[Any], sel: Selection, bbox: BBox) -> bool:
    """Whether public data was held back for privacy around ``bbox`` and the selection's
    range: True only where a district-day's held-back units saw at least k rides (see
    :data:`_WITHHELD_QUERY`); always False for a selection without k."""
    if sel.min_rides <= 0:
        return False
    row = conn.execute(_WITHHELD_QUERY, _withheld_args(sel, withheld_districts(bbox))).fetchone()
    return bool(row and row[0])


async def awithheld(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox) -> bool:
    """:func:`withheld` for an async connection."""
    if sel.min_rides <= 0:
        return False
    cur = await conn.execute(_WITHHELD_QUERY, _withheld_args(sel, withheld_districts(bbox)))
    row = await cur.fetchone()
    return bool(row and row[0])
