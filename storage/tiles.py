"""The tile read path: per-cell count and sums under the privacy thresholds, fast.

``storage.queries.acell_stats`` merges histograms (``bikesense_hist_sum``),
counts distinct rides and days per cell and derives percentiles; a tile needs
only count, Σx (or noise energy and duration) under the same privacy filter,
and must answer in a few milliseconds (bench/bench_tiles.py).
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

_SUMS: LiteralString = """
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM window_partials p {join}
WHERE p.metric = %(metric)s AND p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
"""

# Keyed roles: no threshold, so no presence rows to read at all.
_CELL_SUMS_ALL: LiteralString = "WITH " + _WANTED + _SUMS.replace("{join}", "")

# The public: only cell-windows with at least k rides. A presence row is one
# (cell-window, ride, day of the ride); the day is a function of the ride (the day
# it started, stream.core.aggregate), so count(*) is the number of distinct rides,
# and the primary key's order (window_start, cell) makes it a streaming count over
# an index-only scan, without the sort count(DISTINCT) needs. MATERIALIZED: the
# planner cannot estimate what the HAVING keeps and would otherwise re-run steps.
_CELL_SUMS_K: LiteralString = "WITH " + _WANTED + """,
passing AS MATERIALIZED (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.window_start, pr.cell
    HAVING count(*) >= %(k)s
)""" + _SUMS.replace("{join}", "JOIN passing USING (cell, window_start)")

# With a days threshold too: the cells whose passing windows hold rides on enough days.
_CELL_DAYS: LiteralString = "WITH " + _WANTED + """,
passing AS MATERIALIZED (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.window_start, pr.cell
    HAVING count(*) >= %(k)s
)
SELECT pr.cell
FROM window_presence pr JOIN passing USING (cell, window_start)
WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
  AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
GROUP BY pr.cell
HAVING count(DISTINCT pr.day) >= %(min_days)s
"""


async def cell_means(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
                     ) -> np.ndarray:
    """Per cell whose centre is in ``bbox`` (west < east): count, Σx, noise energy and
    duration over the cell-windows that pass ``sel``'s privacy thresholds."""
    params = sel.params() | {"west": bbox.west, "south": bbox.south, "east": bbox.east,
                             "north": bbox.north}
    query = _CELL_SUMS_K if sel.min_rides > 1 else _CELL_SUMS_ALL
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
