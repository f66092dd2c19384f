"""Whether public data was withheld for privacy around a view: one flag per district-day.

The public sees figures only from units that passed k (:mod:`storage.selection`); this
tells it, without isolating a unit or a ride, that some were held back. Comes twice:
:func:`withheld` for ``psycopg.Connection`` and :func:`awithheld` for
``psycopg.AsyncConnection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from h3.api import basic_int as h3int

from storage.selection import BBox, Selection, epoch_ms

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
    day_start = epoch_ms(sel.start) // 1000 // _DAY * _DAY
    day_end = -(-(epoch_ms(sel.end) // 1000) // _DAY) * _DAY
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
