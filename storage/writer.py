"""The batch writer: raw readings, then aggregates of only the new ones, in one transaction.

docs/design.md decision 2 (exactly-once effect over at-least-once delivery):

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

   then the aggregation callable runs on exactly the new rows, and its rows are
   stored (storage/aggregate_rows.py): partials merged into ``cell_windows``,
   presence rows inserted unless already there and counted into
   ``window_rides``, cells registered.

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
Cells that earlier committed writes registered can be left out of a plan
(:class:`storage.known_rows.KnownRows`, :meth:`WritePlan.leaving_out`): they would
only meet ``ON CONFLICT DO NOTHING``.

A plan may also leave its aggregates to a later write (:meth:`WritePlan.deferring`:
its transaction stores the readings and records the new ones in
``aggregate_backlog``, storage/backlog.py), or take those of earlier ones with its
own (:meth:`WritePlan.with_earlier`: its transaction deletes their backlog records
and merges the aggregates of its new readings and of theirs at once);
storage/deferred.py decides which (docs/storage.md, "Aggregates merged over several
batches"). :func:`recover_backlog` merges what a crash left recorded.

The readings' columns and payloads are in storage/readings.py, the staging tables
in storage/staging.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import psycopg

from storage import aggregate_rows, backlog, readings, staging
from storage.aggregate_rows import AggregateRows
from storage.deferred import DeferredRows
from storage.exceptions import BatchError
from storage.known_rows import KnownRows
from stream.core.batch import ENRICHED_DTYPE, first_by_key
from stream.core.merge import merge_partials, merge_presence

# KnownRows is part of the write's interface (WritePlan.leaving_out takes one).
__all__ = [
    "MAX_TS_MS",
    "MS_PER_DAY",
    "AggregateFn",
    "KnownRows",
    "WritePlan",
    "WriteResult",
    "dedupe",
    "ensure_partitions",
    "join_plans",
    "partition_days",
    "plan_write",
    "recover_backlog",
    "write_batch",
]

#: ``aggregate(new_readings) -> (partials, presence)``, e.g. a
#: ``functools.partial`` of ``stream.core.aggregate.aggregate`` with the
#: configured resolutions and window sizes.
AggregateFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

MS_PER_DAY = 86_400_000
#: Event and receive times outside 1970-01-01 .. 9999-12-31 UTC cannot be real and
#: would make a daily partition the database cannot name; refusing them here turns
#: a poison batch into a clear error instead of a database error retried forever.
MAX_TS_MS = 253_402_300_800_000

_PREPARE_STAGING = staging.render(
    staging.prepare((readings.STAGING, *aggregate_rows.STAGING_TABLES))
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch changed."""

    inserted: int  # readings stored for the first time
    duplicates: int  # readings of the batch already stored, or repeated within it
    partials_merged: int  # cell-window rows (every metric's partial) inserted or merged into
    #: A deferring plan's new readings, recorded in the backlog (None if none was new).
    deferred: DeferredRows | None = None
    #: Earlier deferred batches whose aggregates this write merged (those another
    #: transaction had not settled first).
    settled: int = 0


def dedupe(enriched: np.ndarray) -> np.ndarray:
    """The rows of ``enriched`` with distinct keys (first occurrence kept), sorted by key."""
    return first_by_key(enriched, readings.KEY_FIELDS)


def partition_days(enriched: np.ndarray) -> list[int]:
    """The UTC days (since 1970-01-01) the readings' event times fall on."""
    return [int(d) for d in np.unique(enriched["ts_ms"] // MS_PER_DAY)]


def ensure_partitions(conn: psycopg.Connection[Any], days: list[int]) -> int:
    """Create the missing daily raw-reading partitions (a no-op on TimescaleDB)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT bikesense_ensure_readings_partitions(%s::integer[])", (days,)
        ).fetchone()
    return int(row[0]) if row else 0


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
    aggregates: AggregateRows | None
    #: Readings of the original batch repeated within it (left out of ``rows``).
    repeated: int = 0
    #: Set by :meth:`leaving_out`: the aggregates before known rows were left out, all
    #: of which the database holds once this plan committed with every reading new
    #: (what to :meth:`KnownRows.remember` then).
    stored_after: AggregateRows | None = None
    #: Readings of earlier transactions whose aggregates waited, merged with this plan's
    #: (``aggregates`` are then those of their rows and ``rows`` together).
    earlier: tuple[DeferredRows, ...] = ()
    #: Store no aggregates: record the new readings in the backlog instead.
    defer: bool = False

    @cached_property
    def readings_payload(self) -> bytes:
        return readings.table_payload(self.rows) if len(self.rows) else b""

    @property
    def all_rows(self) -> np.ndarray:
        """The rows whose aggregates this plan merges: the earlier ones, then its own."""
        if not self.earlier:
            return self.rows
        return np.concatenate([*(d.rows for d in self.earlier), self.rows])

    def aggregated(self, aggregate: AggregateFn) -> WritePlan:
        """This plan with the aggregates of all its rows and of the earlier ones (itself if
        it has them, or defers them)."""
        if self.aggregates is not None or self.defer:
            return self
        rows = self.all_rows
        if not len(rows):
            return self
        return replace(self, aggregates=AggregateRows.of(*aggregate(rows)))

    def deferring(self) -> WritePlan:
        """This plan storing its readings only, and recording the new ones in the backlog
        for a later write to merge their aggregates."""
        if self.earlier:
            raise ValueError("a plan that merges earlier aggregates cannot defer its own")
        return replace(self, aggregates=None, stored_after=None, defer=True)

    def with_earlier(self, earlier: tuple[DeferredRows, ...]) -> WritePlan:
        """This plan merging the aggregates of ``earlier`` deferred batches with its own
        (aggregated again when next :meth:`aggregated`)."""
        if self.defer:
            raise ValueError("a deferring plan cannot merge earlier aggregates")
        return replace(self, earlier=earlier, aggregates=None, stored_after=None)

    def leaving_out(self, known: KnownRows) -> WritePlan:
        """This plan without the cells ``known`` says are registered
        (itself if it has no aggregates or has left them out already)."""
        if self.aggregates is None or self.stored_after is not None:
            return self
        return replace(
            self, aggregates=known.leave_out(self.aggregates), stored_after=self.aggregates
        )

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
            f"write_batch needs an array of ENRICHED_DTYPE, got dtype {enriched.dtype}"
        )
    _check_times(enriched)
    unique = dedupe(enriched)
    return WritePlan(
        unique,
        partition_days(unique),
        AggregateRows.of(*aggregate(unique)) if aggregate and len(unique) else None,
        len(enriched) - len(unique),
    )


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
        aggregates = AggregateRows.of(
            merge_partials(np.concatenate([a.partials for a in parts])),
            merge_presence(np.concatenate([a.presence for a in parts])),
        )
    return WritePlan(unique, partition_days(unique), aggregates, repeated)


def write_batch(
    conn: psycopg.Connection[Any],
    batch: np.ndarray | WritePlan,
    aggregate: AggregateFn,
    *,
    create_partitions: bool = True,
) -> WriteResult:
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
    if len(plan.rows) == 0 and not plan.earlier:
        return WriteResult(0, plan.repeated, 0)
    if create_partitions and plan.days:
        ensure_partitions(conn, plan.days)
    deferred = None
    merged = 0
    with conn.transaction():
        conn.execute(_PREPARE_STAGING)
        new = _insert_new_readings(conn, plan) if len(plan.rows) else plan.rows
        if plan.defer:
            if len(new):
                deferred = DeferredRows(backlog.record(conn, new), new)
            settled: list[DeferredRows] = []
        else:
            # Earlier batches' readings count only if this transaction deletes their
            # record: one a recovery took first was merged there.
            ids = backlog.settle(conn, [d.backlog_id for d in plan.earlier])
            settled = [d for d in plan.earlier if d.backlog_id in ids]
            if len(new) or settled:
                as_planned = (
                    plan.aggregates is not None
                    and len(new) == len(plan.rows)
                    and len(settled) == len(plan.earlier)
                )
                rows = (
                    plan.aggregates
                    if as_planned and plan.aggregates is not None
                    else AggregateRows.of(
                        *aggregate(np.concatenate([*(d.rows for d in settled), new]))
                    )
                )
                merged = aggregate_rows.store(conn, rows)
    return WriteResult(
        inserted=len(new),
        duplicates=plan.repeated + len(plan.rows) - len(new),
        partials_merged=merged,
        deferred=deferred,
        settled=len(settled),
    )


def recover_backlog(conn: psycopg.Connection[Any], aggregate: AggregateFn) -> int:
    """Merge the aggregates of every reading the backlog still names (a crash left them
    waiting) and delete its records, in one transaction (a savepoint in the caller's);
    returns how many readings."""
    with conn.transaction():
        conn.execute(_PREPARE_STAGING)
        rows = backlog.recover(conn)
        if len(rows):
            aggregate_rows.store(conn, AggregateRows.of(*aggregate(rows)))
    return len(rows)


def _check_times(enriched: np.ndarray) -> None:
    for name in ("ts_ms", "received_ms"):
        bad = np.flatnonzero((enriched[name] < 0) | (enriched[name] >= MAX_TS_MS))
        if len(bad):
            r = enriched[bad[0]]
            raise BatchError(
                f"{len(bad)} reading(s) have {name} outside 1970..9999, e.g. {int(r[name])} "
                f"for kit {int(r['kit_id'])} boot {int(r['boot_id'])} seq {int(r['seq'])} "
                f"idx {int(r['idx'])}"
            )


def _insert_new_readings(conn: psycopg.Connection[Any], plan: WritePlan) -> np.ndarray:
    """Store the readings not stored yet; return exactly those, in key order."""
    unique = plan.rows
    try:
        with conn.transaction():  # a savepoint: a unique violation undoes only this
            staging.copy(conn, readings.COPY_INTO_TABLE, plan.readings_payload)
    except psycopg.errors.UniqueViolation:
        pass
    else:
        return unique
    staging.copy(conn, readings.COPY_INTO_STAGING, readings.staging_payload(unique))
    row = conn.execute(readings.INSERT_NEW).fetchone()
    row_nos = np.sort(np.asarray(row[0] if row and row[0] else [], dtype=np.int64))
    return unique[row_nos]
