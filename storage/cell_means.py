"""The tile read path: per-cell count and sums under the privacy thresholds, fast.

``storage.cell_stats.acell_stats`` merges histograms (``bikesense_hist_sum``),
counts distinct rides and days per cell and derives percentiles; a tile needs
only count, Σx (or noise energy and duration) under the same privacy filter,
and must answer in a few milliseconds (bench/bench_tiles.py).

The k-anonymity check reads ``window_rides`` (migrations/0004_window_rides.sql,
0103_metric_rides.sql), the distinct rides of each cell-window kept by the writer,
per metric, instead of counting ``window_presence`` rows per request (counting them
per request read 95,000 presence entries for the largest zoom-13 tile of 30 days of a
town). For the public it reads them at the public units only (the finest resolution
and the finest public window, ``storage.selection.UNITS``) and merges a tile's coarser
cells from the passing units: a coarse or long-range tile reads more rows than a
query of its own resolution and window would, the price of closing the public view
under differencing (docs/privacy.md). Keyed roles read their own grain, no counts.
"""

from __future__ import annotations

from typing import Any, LiteralString

import numpy as np
import psycopg

from storage.cellwindows import per_metric
from storage.corrected_windows import corrected_per_metric, pick
from storage.selection import UNITS, BBox, Selection

CELL_MEANS_DTYPE = np.dtype(
    [
        ("cell", "<i8"),
        ("n", "<i8"),
        ("sum", "<f8"),
        ("energy", "<f8"),
        ("duration_s", "<f8"),
    ]
)

_WANTED: LiteralString = """
wanted AS MATERIALIZED (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND lon_deg BETWEEN %(west)s AND %(east)s
)"""

# Keyed roles: no threshold, so no ride counts to read at all.
_CELL_SUMS_ALL_TEMPLATE: LiteralString = (
    "WITH "
    + _WANTED
    + """
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM {partials} p
WHERE p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
"""
)
_CELL_SUMS_ALL = per_metric(_CELL_SUMS_ALL_TEMPLATE)
_CELL_SUMS_ALL_CORRECTED = corrected_per_metric(_CELL_SUMS_ALL_TEMPLATE)

# The public: only units (storage.selection.UNITS: cell-windows of the finest public
# grain) with at least k distinct rides that measured the metric count, and a cell of a
# coarser resolution or window is the merge of its passing units, never judged on its
# own (closed under differencing, docs/privacy.md). This joins, where the query it
# replaced read each cell's passing windows as an array and its partials in one range
# scan without a join (4 times fewer buffers on the zoom-12 tiles): a coarse tile now
# reads its cells' finest hourly units, the price of never publishing a parent that
# hides one child (bench/bench_tiles.py measures it).
_CELL_SUMS_K_TEMPLATE: LiteralString = (
    "WITH "
    + _WANTED
    + ","
    + UNITS
    + """
SELECT u.parent, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM units u JOIN {partials} p USING (cell, window_start)
WHERE p.resolution = %(unit_res)s AND p.window_s = %(unit_window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
GROUP BY u.parent
"""
)
_CELL_SUMS_K = per_metric(_CELL_SUMS_K_TEMPLATE)
_CELL_SUMS_K_CORRECTED = corrected_per_metric(_CELL_SUMS_K_TEMPLATE)

# With a days threshold too: the cells whose passing units hold rides on enough days,
# from the days kept with the ride counts.
_CELL_DAYS_TEMPLATE: LiteralString = (
    "WITH "
    + _WANTED
    + ","
    + UNITS
    + """
SELECT u.parent
FROM units u CROSS JOIN LATERAL unnest(u.days) AS d(day)
GROUP BY u.parent
HAVING count(DISTINCT d.day) >= %(min_days)s
"""
)
_CELL_DAYS = _CELL_DAYS_TEMPLATE.encode()
# The units of the corrected view are those with a complete corrected row: the template
# has no partials, only the units.
_CELL_DAYS_CORRECTED = corrected_per_metric(_CELL_DAYS_TEMPLATE)


async def cell_means(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """Per cell whose centre is in ``bbox`` (west < east): count, Σx, noise energy and
    duration over the cell-windows that pass ``sel``'s privacy thresholds."""
    params = sel.params() | {
        "west": bbox.west,
        "south": bbox.south,
        "east": bbox.east,
        "north": bbox.north,
    }
    judged = sel.min_rides > 1 or sel.units != (sel.resolution, sel.window_s)
    if judged:
        query = pick(_CELL_SUMS_K, _CELL_SUMS_K_CORRECTED, sel.metric, on=sel.corrected)
    else:
        query = pick(_CELL_SUMS_ALL, _CELL_SUMS_ALL_CORRECTED, sel.metric, on=sel.corrected)
    cur = await conn.execute(query, params)
    rows = await cur.fetchall()
    out = np.zeros(len(rows), dtype=CELL_MEANS_DTYPE)
    if rows:
        columns = list(zip(*rows, strict=True))
        for name, column in zip(CELL_MEANS_DTYPE.names or (), columns, strict=True):
            out[name] = np.asarray(column, dtype=CELL_MEANS_DTYPE[name])
    if sel.min_days > 1 and len(out):
        days = _CELL_DAYS_CORRECTED[sel.metric] if sel.corrected else _CELL_DAYS
        cur = await conn.execute(days, params)
        enough = np.array([row[0] for row in await cur.fetchall()], dtype=np.int64)
        out = out[np.isin(out["cell"], enough)]
    return out
