"""The tile read path: per-cell count and sums under the privacy thresholds, fast.

``storage.queries.acell_stats`` merges histograms (``bikesense_hist_sum``),
counts distinct rides and days per cell and derives percentiles; a tile needs
only count, Σx (or noise energy and duration) under the same privacy filter,
and must answer in a few milliseconds (bench/bench_tiles.py).

The k-anonymity check reads ``window_rides`` (migrations/0004_window_rides.sql),
the distinct rides of each cell-window kept by the writer, instead of counting
``window_presence`` rows per request. Per cell of the tile, its window partials
and its ride counts are two range scans in the same order (window start), joined
by a merge join; the partials of a window with fewer than k rides are read and
left out of the sums. EXPLAIN (ANALYZE, BUFFERS) on 30 days of a town (the
largest zoom-13 tile, 675 cells, daily windows): 25,000 buffers, of which 22,000
are the partials a keyed role reads too; counting presence rows instead read
64,000 presence entries and sorted twice.

The queries are planned afresh on each call (``prepare=False``): psycopg
prepares a statement after five runs, PostgreSQL then settles on a generic plan
that cannot see how many cells and windows a tile has, and the town's 30-day
tiles measured three times slower at the median and p95 that way.
"""

from __future__ import annotations

from typing import Any, LiteralString

import numpy as np
import psycopg

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

# Keyed roles: no threshold, so no ride counts to read at all.
_CELL_SUMS_ALL: LiteralString = "WITH " + _WANTED + """
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM window_partials p
WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
"""

# The public: only cell-windows with at least k distinct rides count. The k-check
# is in the aggregate's FILTER rather than in WHERE on purpose: with it in WHERE
# the planner, seeing that most counts (those of one-minute windows) are below k,
# expects one passing window per cell and probes the partials' primary key once
# per window (64,000 buffers for the tile above instead of 25,000). A cell with no
# passing window sums to NULL and is left out.
_CELL_SUMS_K: LiteralString = "WITH " + _WANTED + """
SELECT w.cell, s.n, s.sum, s.energy, s.duration_s
FROM wanted w CROSS JOIN LATERAL (
    SELECT sum(p.n) FILTER (WHERE r.rides >= %(k)s) AS n,
           sum(p.sum) FILTER (WHERE r.rides >= %(k)s) AS sum,
           sum(p.energy) FILTER (WHERE r.rides >= %(k)s) AS energy,
           sum(p.duration_s) FILTER (WHERE r.rides >= %(k)s) AS duration_s
    FROM window_partials p JOIN window_rides r USING (cell, window_start)
    WHERE p.cell = w.cell AND p.metric = %(metric)s AND p.resolution = %(res)s
      AND p.window_s = %(window_s)s AND p.window_start >= %(start)s AND p.window_start < %(end)s
      AND r.cell = w.cell AND r.resolution = %(res)s
      AND r.window_s = %(window_s)s AND r.window_start >= %(start)s AND r.window_start < %(end)s
) s
WHERE s.n IS NOT NULL
"""

# With a days threshold too: the cells whose passing windows hold rides on enough
# days, from the days kept with the ride counts.
_CELL_DAYS: LiteralString = "WITH " + _WANTED + """
SELECT r.cell
FROM window_rides r CROSS JOIN LATERAL unnest(r.days) AS d(day)
WHERE r.resolution = %(res)s AND r.window_s = %(window_s)s
  AND r.window_start >= %(start)s AND r.window_start < %(end)s
  AND r.cell IN (SELECT cell FROM wanted)
  AND r.rides >= %(k)s
GROUP BY r.cell
HAVING count(DISTINCT d.day) >= %(min_days)s
"""


async def cell_means(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
                     ) -> np.ndarray:
    """Per cell whose centre is in ``bbox`` (west < east): count, Σx, noise energy and
    duration over the cell-windows that pass ``sel``'s privacy thresholds."""
    params = sel.params() | {"west": bbox.west, "south": bbox.south, "east": bbox.east,
                             "north": bbox.north}
    query = _CELL_SUMS_K if sel.min_rides > 1 else _CELL_SUMS_ALL
    cur = await conn.execute(query, params, prepare=False)
    rows = await cur.fetchall()
    out = np.zeros(len(rows), dtype=CELL_MEANS_DTYPE)
    if rows:
        columns = list(zip(*rows, strict=True))
        for name, column in zip(CELL_MEANS_DTYPE.names or (), columns, strict=True):
            out[name] = np.asarray(column, dtype=CELL_MEANS_DTYPE[name])
    if sel.min_days > 1 and len(out):
        cur = await conn.execute(_CELL_DAYS, params, prepare=False)
        enough = np.array([row[0] for row in await cur.fetchall()], dtype=np.int64)
        out = out[np.isin(out["cell"], enough)]
    return out
