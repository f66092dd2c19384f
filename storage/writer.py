"""The batch writer: raw readings, then aggregates of only the new ones, in one transaction.

DESIGN.md decision 2 (exactly-once effect over at-least-once delivery):

1. the batch is de-duplicated by identity in numpy and sorted by it (a fixed
   lock order, so concurrent writers do not deadlock);
2. the daily partitions it touches are created if missing, in a short
   transaction of their own (late data of any age lands);
3. in one transaction, the new readings are found and stored:

   * fast path, for a batch none of whose readings is stored yet (the common
     case): one binary COPY straight into ``readings``, inside a savepoint;
     every row is new;
   * if that COPY meets a unique violation (a redelivery, an overlap), the
     savepoint is rolled back and the batch goes the slow way: binary COPY into
     a temporary staging table with a row number, then ``INSERT ... ON CONFLICT
     DO NOTHING RETURNING`` the keys that were new, joined back to their row
     numbers. (Each such fallback leaves one "duplicate key" ERROR line in the
     server log; that is the price of the fast path being a plain COPY.)

   then the aggregation callable runs on exactly the new rows; its partials
   are merged into ``cell_windows`` (one row per cell-window with every
   metric's partial, storage/cellwindows.py) with an upsert that adds counts,
   sums and histograms and takes min / max, and its presence rows are inserted
   unless already there; the distinct rides and days of the inserted ones are
   added to ``window_rides`` in the same statement.

A replayed or overlapping batch inserts no reading a second time, so it adds
nothing to any aggregate: every table is left as it was.

The Python part of that work need not wait inside the transaction:
:func:`plan_write` checks and de-duplicates a batch (and aggregates it, if
given the callable), :meth:`WritePlan.aggregated` aggregates it on the
assumption that all its readings are new (the common case), and
:meth:`WritePlan.encode` encodes its COPY payloads, all before any transaction
is open (the embedded runtime joins the plans of a batch's chunks with
:func:`join_plans` first, and aggregates and encodes the batch once).
:func:`write_batch` takes such a plan and
uses its aggregates only when the fast-path COPY proved them right (every row
was new); otherwise it aggregates the rows that were new, as without a plan.
The embedded runtime plans the next batch while the current one is written.
Presence rows and cells that earlier committed writes stored can be left out of a
plan (:class:`KnownRows`, :meth:`WritePlan.leaving_out`): they would only meet
``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage import cellwindows, copybin
from storage.copybin import Column, scalar
from storage.exceptions import BatchError
from stream.core.batch import ENRICHED_DTYPE, first_by_key
from stream.core.merge import merge_partials
from stream.core.partials import PARTIAL_DTYPE, PRESENCE_DTYPE

#: ``aggregate(new_readings) -> (partials, presence)``, e.g. a
#: ``functools.partial`` of ``stream.core.aggregate.aggregate`` with the
#: configured resolutions and window sizes.
AggregateFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: The reading's key in the database: identity plus the partition column
#: (see migrations/0002_readings.plain.sql for why ts belongs to it).
KEY_FIELDS = ("kit_id", "boot_id", "seq", "idx", "ts_ms")

MS_PER_DAY = 86_400_000
#: Event and receive times outside 1970-01-01 .. 9999-12-31 UTC cannot be real and
#: would make a daily partition the database cannot name; refusing them here turns
#: a poison batch into a clear error instead of a database error retried forever.
MAX_TS_MS = 253_402_300_800_000


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch changed."""

    inserted: int  # readings stored for the first time
    duplicates: int  # readings of the batch already stored, or repeated within it
    partials_merged: int  # cell-window rows (every metric's partial) inserted or merged into


READING_COLUMNS: tuple[Column, ...] = (
    scalar("row_no", "integer"),
    scalar("kit_id", "bigint"),
    scalar("boot_id", "bigint"),
    scalar("seq", "bigint"),
    scalar("idx", "integer"),
    scalar("ts", "timestamptz"),
    scalar("lat_deg", "double precision"),
    scalar("lon_deg", "double precision"),
    scalar("gnss_fix", "smallint"),
    scalar("hdop", "real"),
    scalar("satellites", "smallint"),
    scalar("speed_mps", "real"),
    scalar("pm1_ugm3", "real"),
    scalar("pm25_ugm3", "real"),
    scalar("pm10_ugm3", "real"),
    scalar("no2_ugm3", "real"),
    scalar("noise_laeq_db", "real"),
    scalar("noise_lamax_db", "real"),
    scalar("interval_ms", "bigint"),
    scalar("temperature_c", "real"),
    scalar("humidity_pct", "real"),
    scalar("status", "integer"),
    scalar("qa_flags", "bigint"),
    scalar("cell", "bigint"),
    scalar("ride_id", "bigint"),
    scalar("received_at", "timestamptz"),
)

PRESENCE_COLUMNS: tuple[Column, ...] = (
    scalar("resolution", "smallint"),
    scalar("cell", "bigint"),
    scalar("window_s", "integer"),
    scalar("window_start", "timestamptz"),
    scalar("ride_id", "bigint"),
    scalar("day", "integer"),
)

CELL_COLUMNS: tuple[Column, ...] = (
    scalar("cell", "bigint"),
    scalar("resolution", "smallint"),
    scalar("lat_deg", "double precision"),
    scalar("lon_deg", "double precision"),
)


def _staging_ddl(table: str, columns: tuple[Column, ...]) -> str:
    cols = ", ".join(f"{c.name} {c.sql_type}" for c in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({cols}) ON COMMIT DELETE ROWS"


def _copy_sql(table: str, columns: tuple[Column, ...]) -> str:
    return f"COPY {table} ({', '.join(c.name for c in columns)}) FROM STDIN (FORMAT BINARY)"


# Built once from the column lists above, so the staging layout and the binary
# encoding cannot drift apart. Only our own constant names go into these strings.
_STAGING_TABLES = {
    "bikesense_stage_readings": READING_COLUMNS,
    "bikesense_stage_cell_windows": cellwindows.COLUMNS,
    "bikesense_stage_presence": PRESENCE_COLUMNS,
    "bikesense_stage_cells": CELL_COLUMNS,
}
# ON COMMIT DELETE ROWS empties them at commit, but a caller may write several
# batches in one transaction of its own: empty them before each use too.
_STAGING_DDL = ";\n".join(
    [_staging_ddl(table, columns) for table, columns in _STAGING_TABLES.items()]
    + [f"DELETE FROM {table}" for table in _STAGING_TABLES]
).encode()
_COPY_READINGS = _copy_sql("bikesense_stage_readings", READING_COLUMNS).encode()
_COPY_INTO_READINGS = _copy_sql("readings", READING_COLUMNS[1:]).encode()
_COPY_CELL_WINDOWS = _copy_sql("bikesense_stage_cell_windows", cellwindows.COLUMNS).encode()
_COPY_PRESENCE = _copy_sql("bikesense_stage_presence", PRESENCE_COLUMNS).encode()
_COPY_CELLS = _copy_sql("bikesense_stage_cells", CELL_COLUMNS).encode()

_INSERT_NEW_READINGS = """
WITH ins AS (
    INSERT INTO readings (
        kit_id, boot_id, seq, idx, ts, lat_deg, lon_deg, gnss_fix, hdop, satellites, speed_mps,
        pm1_ugm3, pm25_ugm3, pm10_ugm3, no2_ugm3, noise_laeq_db, noise_lamax_db, interval_ms,
        temperature_c, humidity_pct, status, qa_flags, cell, ride_id, received_at)
    SELECT kit_id, boot_id, seq, idx, ts,
        NULLIF(lat_deg, 'NaN'), NULLIF(lon_deg, 'NaN'), gnss_fix, NULLIF(hdop, 'NaN'),
        NULLIF(satellites, -1), NULLIF(speed_mps, 'NaN'),
        NULLIF(pm1_ugm3, 'NaN'), NULLIF(pm25_ugm3, 'NaN'), NULLIF(pm10_ugm3, 'NaN'),
        NULLIF(no2_ugm3, 'NaN'), NULLIF(noise_laeq_db, 'NaN'), NULLIF(noise_lamax_db, 'NaN'),
        interval_ms, NULLIF(temperature_c, 'NaN'), NULLIF(humidity_pct, 'NaN'), status,
        qa_flags, NULLIF(cell, 0), ride_id, received_at
    FROM bikesense_stage_readings
    ORDER BY row_no
    ON CONFLICT DO NOTHING
    RETURNING kit_id, boot_id, seq, idx, ts
)
SELECT array_agg(s.row_no)
FROM ins JOIN bikesense_stage_readings AS s USING (kit_id, boot_id, seq, idx, ts)
"""

# The partials of a batch, one row per cell-window (storage/cellwindows.py), merged:
# counts and sums add, LEAST / GREATEST take the extremes (NaN travels as NULL, which
# they skip: PostgreSQL orders NaN above every number), histograms add.
_MERGE_CELL_WINDOWS = cellwindows.merge_statement("bikesense_stage_cell_windows")

# Presence rows not stored yet are inserted, and exactly those are counted into
# window_rides (migrations/0004_window_rides.sql): a replayed row conflicts, is not
# returned, and counts nothing. A ride has one day (the local day it started,
# stream.core.aggregate), but a new row whose ride is already stored in the
# cell-window with another day (a changed day_tz) adds a day, not a ride. The outer
# query does not see the CTE's own inserts, so EXISTS finds only earlier rows.
_INSERT_PRESENCE = """
WITH new AS (
    INSERT INTO window_presence (resolution, cell, window_s, window_start, ride_id, day)
    SELECT resolution, cell, window_s, window_start, ride_id, day
    FROM bikesense_stage_presence
    ORDER BY resolution, window_s, cell, window_start, ride_id, day
    ON CONFLICT DO NOTHING
    RETURNING resolution, cell, window_s, window_start, ride_id, day
),
counted AS (
    SELECT n.resolution, n.window_s, n.cell, n.window_start, n.day,
        CASE WHEN EXISTS (
            SELECT 1 FROM window_presence o
            WHERE o.resolution = n.resolution AND o.window_s = n.window_s
              AND o.window_start = n.window_start AND o.cell = n.cell
              AND o.ride_id = n.ride_id AND o.day <> n.day)
        THEN NULL ELSE n.ride_id END AS new_ride
    FROM new n
)
INSERT INTO window_rides AS w (resolution, window_s, cell, window_start, rides, days)
SELECT resolution, window_s, cell, window_start,
    count(DISTINCT new_ride), array_agg(DISTINCT day ORDER BY day)
FROM counted
GROUP BY resolution, window_s, cell, window_start
ORDER BY resolution, window_s, cell, window_start
ON CONFLICT (resolution, window_s, cell, window_start) DO UPDATE SET
    rides = w.rides + EXCLUDED.rides,
    days = bikesense_days_union(w.days, EXCLUDED.days)
"""

_INSERT_CELLS = """
INSERT INTO h3_cells (cell, resolution, lat_deg, lon_deg)
SELECT cell, resolution, lat_deg, lon_deg FROM bikesense_stage_cells ORDER BY cell
ON CONFLICT DO NOTHING
"""


def dedupe(enriched: np.ndarray) -> np.ndarray:
    """The rows of ``enriched`` with distinct keys (first occurrence kept), sorted by key."""
    return first_by_key(enriched, KEY_FIELDS)


def partition_days(enriched: np.ndarray) -> list[int]:
    """The UTC days (since 1970-01-01) the readings' event times fall on."""
    return [int(d) for d in np.unique(enriched["ts_ms"] // MS_PER_DAY)]


def ensure_partitions(conn: psycopg.Connection[Any], days: list[int]) -> int:
    """Create the missing daily raw-reading partitions (a no-op on TimescaleDB)."""
    with conn.transaction():
        row = conn.execute("SELECT bikesense_ensure_readings_partitions(%s::integer[])",
                           (days,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class _Aggregates:
    """The partials and presence rows of a set of readings and the cells they name, with
    their COPY payloads (encoded when first used: the plans of a batch's chunks are
    joined, and only the joined one is written)."""

    partials: np.ndarray
    presence: np.ndarray
    #: The distinct cells of ``partials`` to register in ``h3_cells``, ascending.
    cells: np.ndarray

    @classmethod
    def of(cls, partials: np.ndarray, presence: np.ndarray) -> _Aggregates:
        if partials.dtype != PARTIAL_DTYPE or presence.dtype != PRESENCE_DTYPE:
            raise BatchError("the aggregate callable must return (PARTIAL_DTYPE, PRESENCE_DTYPE) "
                             f"arrays, got ({partials.dtype}, {presence.dtype})")
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

    @cached_property
    def presence_keys(self) -> list[tuple[int, ...]]:
        """The presence rows as tuples, in order (a row's whole value is its key)."""
        return list(zip(*(self.presence[name].tolist() for name in PRESENCE_DTYPE.names or ()),
                        strict=True))

    def encode(self) -> None:
        """Encode every payload now."""
        _ = self.cell_windows_payload, self.presence_payload, self.cells_payload


class KnownRows:
    """Presence rows and cells the database holds, known from this process's own
    committed writes, for later batches to leave out.

    A ride stays in a coarse cell, and in a long window, for many batches, and each
    batch's aggregation names its presence there again: on the benchmark's fleet
    (bench/bench_e2e.py) half the presence rows a batch stages were stored by the
    batch just before, and nine in ten of its cells. Sent again they only meet ``ON
    CONFLICT DO NOTHING``; left out, every table ends the same, and the database has
    half the presence rows to copy, sort and probe. Only what committed is
    remembered (the sink remembers a batch whose readings were all new): the
    presence rows of the last ``batches`` to ``2 * batches`` writes (the repeats
    come from the batches just before), and cells until there are ``max_cells``
    (the registry only grows; then it starts again). Thread-safe: a runtime's
    writers share one.

    A presence row that ``storage.retention.expire_presence`` deletes while still
    remembered is not written again by a late reading of its window; expiry deleted
    that window's ride count too, so the window stays hidden, as expiry means it to.
    """

    def __init__(self, batches: int = 4, max_cells: int = 1_000_000) -> None:
        if batches < 1 or max_cells < 1:
            raise ValueError("KnownRows needs batches >= 1 and max_cells >= 1")
        self._lock = threading.Lock()
        # Two generations of presence keys, each of up to ``batches`` writes: the
        # last ``batches`` to 2 * ``batches`` writes are known.
        self._batches = batches
        self._recent: set[tuple[int, ...]] = set()
        self._older: set[tuple[int, ...]] = set()
        self._in_recent = 0
        self._cells: set[int] = set()
        self._max_cells = max_cells

    def leave_out(self, aggregates: _Aggregates) -> _Aggregates:
        """``aggregates`` without the presence rows and cells known to be stored."""
        with self._lock:
            recent, older, cells = self._recent, self._older, self._cells
            keep = np.array([k not in recent and k not in older
                             for k in aggregates.presence_keys], dtype=bool)
            new_cells = np.array([c not in cells for c in aggregates.cells.tolist()],
                                 dtype=bool)
        if keep.all() and new_cells.all():
            return aggregates
        return _Aggregates(aggregates.partials, aggregates.presence[keep],
                           aggregates.cells[new_cells])

    def remember(self, aggregates: _Aggregates) -> None:
        """Record that ``aggregates``' presence rows and cells are stored (call after the
        write's transaction committed)."""
        with self._lock:
            if self._in_recent == self._batches:
                self._older, self._recent, self._in_recent = self._recent, set(), 0
            self._recent.update(aggregates.presence_keys)
            self._in_recent += 1
            if len(self._cells) + len(aggregates.cells) > self._max_cells:
                self._cells.clear()
            self._cells.update(aggregates.cells.tolist())


@dataclass(frozen=True)
class WritePlan:
    """A batch made ready for :func:`write_batch` outside any transaction.

    ``rows`` are the batch's readings, checked, de-duplicated and sorted by key.
    ``aggregates``, when present, are those of *all* of ``rows``: right exactly
    when every row turns out to be new. The COPY payloads are encoded when first
    used, or by :meth:`encode`: call it before opening the write's transaction, so
    that the transaction does not wait for Python.
    """

    rows: np.ndarray
    days: list[int]
    aggregates: _Aggregates | None
    #: Readings of the original batch repeated within it (left out of ``rows``).
    repeated: int = 0
    #: Set by :meth:`leaving_out`: the aggregates before known rows were left out, all
    #: of which the database holds once this plan committed with every reading new
    #: (what to :meth:`KnownRows.remember` then).
    stored_after: _Aggregates | None = None

    @cached_property
    def readings_payload(self) -> bytes:
        return _direct_payload(self.rows) if len(self.rows) else b""

    def aggregated(self, aggregate: AggregateFn) -> WritePlan:
        """This plan with the aggregates of all its rows (itself if it has them)."""
        if self.aggregates is not None or not len(self.rows):
            return self
        return replace(self, aggregates=_Aggregates.of(*aggregate(self.rows)))

    def leaving_out(self, known: KnownRows) -> WritePlan:
        """This plan without the presence rows and cells ``known`` says are stored
        (itself if it has no aggregates or has left them out already)."""
        if self.aggregates is None or self.stored_after is not None:
            return self
        return replace(self, aggregates=known.leave_out(self.aggregates),
                       stored_after=self.aggregates)

    def encode(self) -> WritePlan:
        """Encode every COPY payload the write may use now; returns the plan."""
        _ = self.readings_payload
        if self.aggregates is not None:
            self.aggregates.encode()
        return self


def plan_write(enriched: np.ndarray, aggregate: AggregateFn | None) -> WritePlan:
    """Check, de-duplicate and encode a batch; aggregate it too unless ``aggregate`` is None.

    Raises :class:`BatchError` for a batch that can never be written (wrong dtype,
    impossible times), before anything touches the database.
    """
    if enriched.dtype != ENRICHED_DTYPE:
        raise BatchError(
            f"write_batch needs an array of ENRICHED_DTYPE, got dtype {enriched.dtype}")
    _check_times(enriched)
    unique = dedupe(enriched)
    return WritePlan(unique, partition_days(unique),
                     _Aggregates.of(*aggregate(unique)) if aggregate and len(unique) else None,
                     len(enriched) - len(unique))


def join_plans(plans: Sequence[WritePlan]) -> WritePlan:
    """One plan for consecutive batches: their aggregates merged when no reading of one
    repeats a reading of another (else the write aggregates whatever is new)."""
    if len(plans) == 1:
        return plans[0]
    rows = np.concatenate([p.rows for p in plans])
    unique = dedupe(rows)
    repeated = sum(p.repeated for p in plans) + len(rows) - len(unique)
    aggregates = None
    if len(unique) == len(rows) and all(p.aggregates for p in plans if len(p.rows)):
        parts = [p.aggregates for p in plans if p.aggregates is not None]
        aggregates = _Aggregates.of(
            merge_partials(np.concatenate([a.partials for a in parts])),
            first_by_key(np.concatenate([a.presence for a in parts]),
                         PRESENCE_DTYPE.names or ()))
    return WritePlan(unique, partition_days(unique), aggregates, repeated)


def write_batch(conn: psycopg.Connection[Any], batch: np.ndarray | WritePlan,
                aggregate: AggregateFn, *, create_partitions: bool = True) -> WriteResult:
    """Store a batch of enriched readings and merge the aggregates of the new ones.

    ``batch`` is an ``ENRICHED_DTYPE`` array or a :class:`WritePlan` of one (made
    with the same ``aggregate``). ``conn`` should not be inside a transaction:
    partitions are created in a short transaction of their own, and the write is
    one transaction that commits on return (nested in the caller's, as
    savepoints, if there is one). A caller that writes in a transaction of its own
    should call :func:`ensure_partitions` before opening it and pass
    ``create_partitions=False``: a partition created inside its transaction keeps
    ``readings`` locked against every other partition creator until it commits.
    Errors from the database propagate as psycopg errors with nothing written.
    """
    plan = batch if isinstance(batch, WritePlan) else plan_write(batch, None)
    if len(plan.rows) == 0:
        return WriteResult(0, plan.repeated, 0)
    if create_partitions:
        ensure_partitions(conn, plan.days)
    with conn.transaction():
        conn.execute(_STAGING_DDL)
        new = _insert_new_readings(conn, plan)
        merged = 0
        if len(new):
            aggregates = (plan.aggregates if plan.aggregates is not None
                          and len(new) == len(plan.rows) else _Aggregates.of(*aggregate(new)))
            merged = _merge_aggregates(conn, aggregates)
    return WriteResult(inserted=len(new), duplicates=plan.repeated + len(plan.rows) - len(new),
                       partials_merged=merged)


def _check_times(enriched: np.ndarray) -> None:
    for name in ("ts_ms", "received_ms"):
        bad = np.flatnonzero((enriched[name] < 0) | (enriched[name] >= MAX_TS_MS))
        if len(bad):
            r = enriched[bad[0]]
            raise BatchError(
                f"{len(bad)} reading(s) have {name} outside 1970..9999, e.g. {int(r[name])} "
                f"for kit {int(r['kit_id'])} boot {int(r['boot_id'])} seq {int(r['seq'])} "
                f"idx {int(r['idx'])}")


def _insert_new_readings(conn: psycopg.Connection[Any], plan: WritePlan) -> np.ndarray:
    """Store the readings not stored yet; return exactly those, in key order."""
    unique = plan.rows
    try:
        with conn.transaction():  # a savepoint: a unique violation undoes only this
            _copy(conn, _COPY_INTO_READINGS, plan.readings_payload)
    except psycopg.errors.UniqueViolation:
        pass
    else:
        return unique
    _copy(conn, _COPY_READINGS, _reading_payload(unique))
    row = conn.execute(_INSERT_NEW_READINGS.encode()).fetchone()
    row_nos = np.sort(np.asarray(row[0] if row and row[0] else [], dtype=np.int64))
    return unique[row_nos]


def _merge_aggregates(conn: psycopg.Connection[Any], aggregates: _Aggregates) -> int:
    merged = 0
    if len(aggregates.partials):
        _copy(conn, _COPY_CELL_WINDOWS, aggregates.cell_windows_payload)
        merged = conn.execute(_MERGE_CELL_WINDOWS).rowcount
    if len(aggregates.cells):
        _copy(conn, _COPY_CELLS, aggregates.cells_payload)
        conn.execute(_INSERT_CELLS.encode())
    if len(aggregates.presence):
        _copy(conn, _COPY_PRESENCE, aggregates.presence_payload)
        conn.execute(_INSERT_PRESENCE.encode())
    return merged


def _copy(conn: psycopg.Connection[Any], statement: bytes, payload: bytes) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(payload)


def reading_values(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Enriched rows as the columns of READING_COLUMNS (times as PostgreSQL timestamps)."""
    values = {name: rows[name] for name in ENRICHED_DTYPE.names or ()}
    values["ts"] = copybin.ms_to_pg_timestamp(rows["ts_ms"])
    values["received_at"] = copybin.ms_to_pg_timestamp(rows["received_ms"])
    return values


def enriched_from_rows(rows: np.ndarray) -> np.ndarray:
    """The inverse of :func:`reading_values`: decoded COPY rows of READING_COLUMNS[1:]
    (absent values as NaN / -1 / 0, not NULL) as ``ENRICHED_DTYPE``."""
    out = np.empty(len(rows), dtype=ENRICHED_DTYPE)
    for name in ENRICHED_DTYPE.names or ():
        if name == "ts_ms":
            out[name] = copybin.pg_timestamp_to_ms(rows["ts"])
        elif name == "received_ms":
            out[name] = copybin.pg_timestamp_to_ms(rows["received_at"])
        else:
            out[name] = rows[name]
    return out


def _reading_payload(rows: np.ndarray) -> bytes:
    values = reading_values(rows)
    values["row_no"] = np.arange(len(rows), dtype=np.int32)
    return copybin.encode(READING_COLUMNS, values, len(rows))


#: Absent values as the stream marks them, stored as NULL.
_NAN_IS_NULL = ("lat_deg", "lon_deg", "hdop", "speed_mps", "pm1_ugm3", "pm25_ugm3", "pm10_ugm3",
                "no2_ugm3", "noise_laeq_db", "noise_lamax_db", "temperature_c", "humidity_pct")


def _direct_payload(rows: np.ndarray) -> bytes:
    """The readings as a binary COPY into ``readings`` itself, absent values as NULL."""
    values = reading_values(rows)
    nulls = {name: np.isnan(rows[name]) for name in _NAN_IS_NULL}
    nulls["satellites"] = rows["satellites"] == -1
    nulls["cell"] = rows["cell"] == 0
    return copybin.encode(READING_COLUMNS[1:], values, len(rows), nulls)


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
