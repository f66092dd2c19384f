"""What a batch's aggregation adds beside its readings, and how it is stored.

Three kinds of rows, each staged with a binary COPY and upserted:

* window partials, one ``cell_windows`` row per cell-window with every metric's
  partial (storage/cellwindows.py), merged: counts and sums add, LEAST /
  GREATEST take the extremes (NaN travels as NULL, which they skip: PostgreSQL
  orders NaN above every number), histograms add;
* presence rows (``window_presence``), one per ride in a cell-window: a ride
  already stored there adds its readings and noise energy (its share of the
  cell-window's means, for the interval's effective number of rides) and ORs its
  metrics in; the distinct rides and days of the new ones are added to
  ``window_rides`` in the same statement;
* the cells they name (``h3_cells``), registered once.

The writer stores them only for readings that were new in its transaction
(docs/design.md decision 2), so a replayed batch adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, LiteralString

import numpy as np
import psycopg
from h3.api import basic_int as h3int
from psycopg import sql

from storage import cellwindows, copybin, rollups, staging
from storage.copybin import Column, scalar
from storage.exceptions import BatchError
from stream.core.partials import PARTIAL_DTYPE, PRESENCE_DTYPE

PRESENCE_COLUMNS: tuple[Column, ...] = (
    scalar("resolution", "smallint"),
    scalar("cell", "bigint"),
    scalar("window_s", "integer"),
    scalar("window_start", "timestamptz"),
    scalar("ride_id", "bigint"),
    scalar("day", "integer"),
    scalar("metrics", "smallint"),
    scalar("readings", "integer"),
    scalar("noise_energy", "double precision"),
)

CELL_COLUMNS: tuple[Column, ...] = (
    scalar("cell", "bigint"),
    scalar("resolution", "smallint"),
    scalar("lat_deg", "double precision"),
    scalar("lon_deg", "double precision"),
)

CELL_WINDOWS_STAGING = staging.StagingTable("bikesense_stage_cell_windows", cellwindows.COLUMNS)
PRESENCE_STAGING = staging.StagingTable("bikesense_stage_presence", PRESENCE_COLUMNS)
CELLS_STAGING = staging.StagingTable("bikesense_stage_cells", CELL_COLUMNS)
STAGING_TABLES = (CELL_WINDOWS_STAGING, PRESENCE_STAGING, CELLS_STAGING)

_COPY_CELL_WINDOWS = staging.render(CELL_WINDOWS_STAGING.copy_in())
_COPY_PRESENCE = staging.render(PRESENCE_STAGING.copy_in())
_COPY_CELLS = staging.render(CELLS_STAGING.copy_in())

_MERGE_CELL_WINDOWS = cellwindows.merge_statement(CELL_WINDOWS_STAGING.name)

# Presence rows not stored yet are inserted, and exactly what they add is counted into
# window_rides (migrations/0004_window_rides.sql, 0103_metric_rides.sql). A row of a ride
# already stored in the cell-window adds its readings and noise energy to the stored
# row's (0112_presence_shares.sql; NULL, unknown, on rows stored before it, stays NULL),
# ORs its metrics in, and adds that ride to the counts of the metrics it brings only.
# The writer stages presence rows of new readings only (docs/design.md decision 2), so
# a replayed batch adds nothing here either.
# A ride has one day (the local day it started, stream.core.aggregate), but a row whose
# ride is already stored in the cell-window with another day (a changed day_tz) adds a
# day, not a ride. Every part of the statement sees the tables as they were before it,
# so ``had`` is what the ride held in the cell-window before this batch. One writer per
# cell-window at a time (the embedded runtime's one session; the distributed one keys
# aggregation by cell), as for the merge of the partials.
_INSERT_PRESENCE_SQL: LiteralString = """
WITH staged AS (
    SELECT resolution, cell, window_s, window_start, ride_id, day,
           bit_or(metrics)::smallint AS metrics, sum(readings)::integer AS readings,
           sum(noise_energy) AS noise_energy
    FROM {staging}
    GROUP BY resolution, cell, window_s, window_start, ride_id, day
),
stored AS (
    INSERT INTO window_presence AS o (resolution, cell, window_s, window_start, ride_id, day,
                                      metrics, readings, noise_energy)
    SELECT resolution, cell, window_s, window_start, ride_id, day, metrics, readings,
           noise_energy
    FROM staged
    ORDER BY resolution, window_s, cell, window_start, ride_id, day
    ON CONFLICT (resolution, window_s, cell, window_start, ride_id, day) DO UPDATE
        SET metrics = o.metrics | EXCLUDED.metrics,
            readings = o.readings + EXCLUDED.readings,
            noise_energy = o.noise_energy + EXCLUDED.noise_energy
    RETURNING 1
),
by_ride AS (
    SELECT s.resolution, s.window_s, s.cell, s.window_start,
           bit_or(s.metrics) & ~coalesce(bit_or(o.had), 0::smallint) AS new_bits,
           bool_and(o.had IS NULL) AS new_ride
    FROM staged s
    CROSS JOIN LATERAL (
        -- What the ride held in the cell-window before (NULL: it was not there), in one
        -- probe of the key per staged row (metrics is NOT NULL).
        SELECT bit_or(o.metrics) AS had FROM window_presence o
        WHERE o.resolution = s.resolution AND o.window_s = s.window_s
          AND o.cell = s.cell AND o.window_start = s.window_start
          AND o.ride_id = s.ride_id) o
    GROUP BY s.resolution, s.window_s, s.cell, s.window_start, s.ride_id
),
counted AS (
    SELECT resolution, window_s, cell, window_start,
        count(*) FILTER (WHERE new_ride) AS rides,
        ARRAY[count(*) FILTER (WHERE (new_bits >> 1) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 2) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 3) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 4) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 5) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 6) & 1 = 1),
              count(*) FILTER (WHERE (new_bits >> 7) & 1 = 1)]::integer[] AS metric_rides
    FROM by_ride
    GROUP BY resolution, window_s, cell, window_start
),
days AS (
    SELECT resolution, window_s, cell, window_start, array_agg(DISTINCT day ORDER BY day) AS days
    FROM staged
    GROUP BY resolution, window_s, cell, window_start
)
INSERT INTO window_rides AS w (resolution, window_s, cell, window_start, rides, days,
                               metric_rides)
SELECT c.resolution, c.window_s, c.cell, c.window_start, c.rides, d.days, c.metric_rides
FROM counted c JOIN days d USING (resolution, window_s, cell, window_start)
ORDER BY c.resolution, c.window_s, c.cell, c.window_start
ON CONFLICT (resolution, window_s, cell, window_start) DO UPDATE SET
    rides = w.rides + EXCLUDED.rides,
    days = bikesense_days_union(w.days, EXCLUDED.days),
    -- Counted before 0103 (NULL): every ride counted for every metric. Added element by
    -- element, unrolled: a plpgsql call per updated row cost about a tenth of this
    -- statement (bench/RESULTS.md, "Longer merges").
    metric_rides = ARRAY[{metric_rides_sum}]
WHERE EXCLUDED.rides > 0 OR NOT (EXCLUDED.days <@ w.days)
   OR EXCLUDED.metric_rides <> ARRAY[0, 0, 0, 0, 0, 0, 0]
"""
_INSERT_PRESENCE = staging.render(
    sql.SQL(_INSERT_PRESENCE_SQL).format(
        staging=PRESENCE_STAGING.identifier,
        metric_rides_sum=sql.SQL(", ").join(
            sql.SQL("coalesce(w.metric_rides[{i}], w.rides) + EXCLUDED.metric_rides[{i}]").format(
                i=sql.Literal(i)
            )
            for i in range(1, 8)
        ),
    )
)

_INSERT_CELLS = staging.render(
    sql.SQL(
        "INSERT INTO h3_cells ({columns})\n"
        "SELECT {columns} FROM {staging} ORDER BY cell\n"
        "ON CONFLICT DO NOTHING"
    ).format(columns=staging.column_list(CELL_COLUMNS), staging=CELLS_STAGING.identifier)
)


@dataclass(frozen=True)
class AggregateRows:
    """The partials and presence rows of a set of readings and the cells they name, with
    their COPY payloads (encoded when first used: the plans of a batch's chunks are
    joined, and only the joined one is written)."""

    partials: np.ndarray
    presence: np.ndarray
    #: The distinct cells of ``partials`` to register in ``h3_cells``, ascending.
    cells: np.ndarray

    @classmethod
    def of(cls, partials: np.ndarray, presence: np.ndarray) -> AggregateRows:
        """The rows of an aggregation's result; :class:`BatchError` if it has the wrong
        dtypes."""
        if partials.dtype != PARTIAL_DTYPE or presence.dtype != PRESENCE_DTYPE:
            raise BatchError(
                "the aggregate callable must return (PARTIAL_DTYPE, PRESENCE_DTYPE) "
                f"arrays, got ({partials.dtype}, {presence.dtype})"
            )
        return cls(partials, presence, np.unique(partials["cell"]))

    @cached_property
    def cell_windows_payload(self) -> bytes:
        return cellwindows.encode(self.partials) if len(self.partials) else b""

    @cached_property
    def presence_payload(self) -> bytes:
        return _presence_payload(self.presence) if len(self.presence) else b""

    @cached_property
    def cells_payload(self) -> bytes:
        return _cell_payload(self.cells) if len(self.cells) else b""

    def encode(self) -> None:
        """Encode every payload now."""
        _ = self.cell_windows_payload, self.presence_payload, self.cells_payload


def store(conn: psycopg.Connection[Any], rows: AggregateRows) -> int:
    """Merge ``rows`` into their tables (inside the caller's transaction, with the staging
    tables prepared); returns the cell-window rows inserted or merged into."""
    merged = 0
    if len(rows.partials):
        staging.copy(conn, _COPY_CELL_WINDOWS, rows.cell_windows_payload)
        merged = conn.execute(_MERGE_CELL_WINDOWS).rowcount
    if len(rows.cells):
        staging.copy(conn, _COPY_CELLS, rows.cells_payload)
        conn.execute(_INSERT_CELLS)
    if len(rows.presence):
        staging.copy(conn, _COPY_PRESENCE, rows.presence_payload)
        conn.execute(_INSERT_PRESENCE)
        rollups.mark_weeks(conn, rows.presence)  # the weeks to roll up again
    return merged


def _presence_payload(presence: np.ndarray) -> bytes:
    values = {name: presence[name] for name in PRESENCE_DTYPE.names or ()}
    values["window_start"] = copybin.ms_to_pg_timestamp(presence["window_start_ms"])
    return copybin.encode(PRESENCE_COLUMNS, values, len(presence))


def _cell_payload(cells: np.ndarray) -> bytes:
    lat = np.empty(len(cells))
    lon = np.empty(len(cells))
    res = np.empty(len(cells), dtype=np.int16)
    for i, cell in enumerate(cells.tolist()):
        lat[i], lon[i] = h3int.cell_to_latlng(cell)
        res[i] = h3int.get_resolution(cell)
    values = {"cell": cells, "resolution": res, "lat_deg": lat, "lon_deg": lon}
    return copybin.encode(CELL_COLUMNS, values, len(cells))
