"""What a read selects: the bbox, the time range, and which windows of one metric it merges.

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

:data:`WANTED_BBOX` and :data:`UNITS` are the cells and units of a selection in SQL,
shared by every read that applies k: :mod:`storage.cell_stats`,
:mod:`storage.time_series` and :mod:`storage.cell_means`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

from storage.exceptions import QueryError
from stream.core.partials import Metric

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
    #: Corrected values (storage.corrected_windows) instead of raw ones: the same units,
    #: the same thresholds, figures merged from the complete corrected units.
    corrected: bool = False

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


def bbox_params(bbox: BBox) -> dict[str, Any]:
    return {"west": bbox.west, "south": bbox.south, "east": bbox.east, "north": bbox.north}


WANTED_BBOX: LiteralString = """
wanted AS (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND CASE WHEN %(west)s <= %(east)s THEN lon_deg BETWEEN %(west)s AND %(east)s
               ELSE lon_deg >= %(west)s OR lon_deg <= %(east)s END
)"""


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


def epoch_ms(instant: datetime) -> int:
    """Milliseconds since 1970, exact (a float timestamp() could be off by one)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
