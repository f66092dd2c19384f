"""The tile read path: per-cell count and sums under the privacy thresholds, fast.

``storage.queries.acell_stats`` merges histograms (``bikesense_hist_sum``),
counts distinct rides and days per cell and derives percentiles; a tile needs
only count, Σx (or noise energy and duration) under the same privacy filter,
and must answer in a few milliseconds (bench/bench_tiles.py).

The k-anonymity check reads ``window_rides`` (migrations/0004_window_rides.sql),
the distinct rides of each cell-window kept by the writer, instead of counting
``window_presence`` rows per request. Per cell of the tile: one range scan of its
ride counts, one of its window partials. EXPLAIN (ANALYZE, BUFFERS) on 30 days of
a town (30 bikes, daily windows), the largest zoom-13 tile (770 cells): 24,700
buffers and 83 ms, about what an officer's query without a k-check reads (25,400),
nearly all of it the partials' heap pages; the previous query, counting presence
rows per request, read 95,000 presence entries, sorted and joined them: 27,700
buffers and 230 ms (the same loaded machine, timings under EXPLAIN).

There is no join in the public query on purpose (see below), so psycopg's
prepared statements (after five runs) and PostgreSQL's generic plans cost it
nothing: measured over the town's tiles, prepared and unprepared differ by less
than the noise, where the previous query's generic plan was 2.5 times slower at
the median (p50 40 ms against 16 ms).
"""

from __future__ import annotations

from typing import Any, LiteralString

import numpy as np
import psycopg

from storage.cellwindows import per_metric
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
_CELL_SUMS_ALL = per_metric("WITH " + _WANTED + """
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM {partials} p
WHERE p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
""")

# The public: only cell-windows with at least k distinct rides count. Per cell, the
# windows passing the k-check come from one range scan of window_rides, as an array,
# and its partials from one range scan of cell_windows, summed where the window
# is in that array. There is no join for the planner to choose: joining the two
# made it expect one passing window per cell (most counts, those of one-minute
# windows, are below k) and probe the partials' key once per window, 4 times the
# buffers of a range scan on the zoom-12 tiles. A cell with no passing window
# skips its partials and is left out.
_CELL_SUMS_K = per_metric("WITH " + _WANTED + """
SELECT w.cell, s.n, s.sum, s.energy, s.duration_s
FROM wanted w CROSS JOIN LATERAL (
    SELECT array_agg(r.window_start) AS starts
    FROM window_rides r
    WHERE r.cell = w.cell AND r.resolution = %(res)s AND r.window_s = %(window_s)s
      AND r.window_start >= %(start)s AND r.window_start < %(end)s
      AND r.rides >= %(k)s
) passing CROSS JOIN LATERAL (
    SELECT sum(p.n) FILTER (WHERE p.window_start = ANY (passing.starts)) AS n,
           sum(p.sum) FILTER (WHERE p.window_start = ANY (passing.starts)) AS sum,
           sum(p.energy) FILTER (WHERE p.window_start = ANY (passing.starts)) AS energy,
           sum(p.duration_s) FILTER (WHERE p.window_start = ANY (passing.starts)) AS duration_s
    FROM {partials} p
    WHERE p.cell = w.cell AND p.resolution = %(res)s
      AND p.window_s = %(window_s)s AND p.window_start >= %(start)s AND p.window_start < %(end)s
) s
WHERE passing.starts IS NOT NULL AND s.n IS NOT NULL
""")

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
    query = (_CELL_SUMS_K if sel.min_rides > 1 else _CELL_SUMS_ALL)[sel.metric]
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
