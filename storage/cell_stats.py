"""Per-cell statistics of a selection in a bbox (the API's cells and heat map).

Each cell's figures are merged from its passing units (:mod:`storage.selection`,
:mod:`storage.merged_stats`). Comes twice: :func:`cell_stats` for
``psycopg.Connection`` and :func:`acell_stats` for ``psycopg.AsyncConnection``,
sharing the SQL and the conversions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import numpy as np
import psycopg

from storage.cellwindows import per_metric
from storage.corrected_windows import corrected_per_metric, pick
from storage.merged_stats import MERGED, PARTIALS_IN_RANGE, presence_by, to_stats
from storage.selection import UNITS, WANTED_BBOX, BBox, Selection, bbox_params

_CELLS_TEMPLATE: LiteralString = (
    "WITH "
    + WANTED_BBOX
    + ","
    + UNITS
    + """,
agg AS (SELECT u.parent AS key, """
    + MERGED
    + PARTIALS_IN_RANGE
    + """ GROUP BY u.parent),"""
    + presence_by("u.parent")
    + """
SELECT agg.*, NULL AS rides, NULL AS days, c.lat_deg, c.lon_deg, NULL AS ride_w,
       NULL AS ride_w_sq
FROM agg JOIN h3_cells c ON c.cell = agg.key
UNION ALL
SELECT key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, rides, days, NULL, NULL,
       ride_w, ride_w_sq
FROM pres WHERE days >= %(min_days)s"""
)
_CELLS_QUERY = per_metric(_CELLS_TEMPLATE)
_CELLS_CORRECTED = corrected_per_metric(_CELLS_TEMPLATE)
# The partials (agg) and the rides and days (pres) of each cell come as two sets of
# rows, joined by key in Python (_joined_by_key), not in SQL: the planner cannot see
# that every unit has one cell_windows row, estimates agg at one row and joins pres to
# it in a nested loop that aggregates pres again for every cell (1.1 s for an hour of
# 1,422 cells at resolution 10, bench/bench_reads.py's backlog; 44 ms this way).


def _joined_by_key(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows of a cells query as (key, partials..., rides, days, lat, lon, ride
    weights), sorted by key: each partials row with its cell's rides, days and ride
    weights; a cell without them (seen on fewer than the selection's days) left out."""
    presence = {row[0]: (row[10:12], row[14:16]) for row in rows if row[1] is None}
    return sorted(
        (
            row[:10] + presence[row[0]][0] + row[12:14] + presence[row[0]][1]
            for row in rows
            if row[1] is not None and row[0] in presence
        ),
        key=lambda row: row[0],
    )


def _query(sel: Selection) -> bytes:
    return pick(_CELLS_QUERY, _CELLS_CORRECTED, sel.metric, on=sel.corrected)


def cell_stats(conn: psycopg.Connection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """Per cell whose centre is in ``bbox``: statistics over the selection (``STATS_DTYPE``),
    sorted by cell."""
    rows = conn.execute(_query(sel), sel.params() | bbox_params(bbox)).fetchall()
    return to_stats(_joined_by_key(rows), sel, by_cell=True, window_s=sel.window_s)


async def acell_stats(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """:func:`cell_stats` for an async connection."""
    cur = await conn.execute(_query(sel), sel.params() | bbox_params(bbox))
    return to_stats(_joined_by_key(await cur.fetchall()), sel, by_cell=True, window_s=sel.window_s)
