"""The embedded runtime's sink: one transaction per batch, then the broker may be acked.

``stream.embedded.DatabaseHandler`` commits each batch through one of these (one
per writer, each with its own connection); the faust workers store theirs the same
way.

Everything a batch of messages produced — new readings and their aggregates,
readings held back or trimmed at the end of their ride, rejected frames, kit
status and last-seen times, and a live-update notification — is written in one
transaction, so a batch is either wholly
durable (and then acked) or not at all (and then delivered again).

A sink given :class:`storage.deferred.DeferredAggregates` (the embedded runtime's)
may leave a batch's aggregates to a later transaction, which merges those of
several batches at once; the batch's transaction records its new readings in the
backlog instead, so they are still durable (and merged exactly once) when it is
acked (storage/backlog.py). :meth:`PostgresSink.flush` merges what waited long
enough when no batch comes, :meth:`PostgresSink.recover` what a crash left.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from functools import partial
from typing import Any

import numpy as np
import psycopg

from storage.aggregate_rows import AggregateRows
from storage.deferred import DeferredAggregates, DeferredRows
from storage.held import hold, take_held
from storage.kits import record_status, touch_last_seen
from storage.notify import CHANNEL as LIVE_CHANNEL
from storage.notify import notify_payload
from storage.rejects import Reject, insert_rejects
from storage.writer import (
    KnownRows,
    WritePlan,
    WriteResult,
    ensure_partitions,
    plan_write,
    recover_backlog,
    write_batch,
)
from stream.core.admitted import Admitted, WriteOutcome
from stream.core.batch import ENRICHED_DTYPE
from stream.core.binning import parent_cells
from stream.core.partials import METRIC_COLUMNS
from stream.core.privacy import settle_ride_ends
from stream.core.process import CoreConfig, aggregate_new_rows
from stream.core.state import KitStates
from stream.core.windows import window_starts_ms

__all__ = ["PostgresSink", "WriteOutcome"]

log = logging.getLogger(__name__)


class PostgresSink:
    """Owns one connection; reconnects on the next write after the database comes back."""

    def __init__(
        self,
        database_url: str,
        core: CoreConfig,
        known: KnownRows | None = None,
        deferred: DeferredAggregates | None = None,
    ) -> None:
        """``known``: what committed writes stored, shared by the sinks of one runtime
        (``storage.writer.KnownRows``); a new one if not given. ``deferred``: the batches
        whose aggregates wait, shared likewise; None: every batch merges its own."""
        self._url = database_url
        self._core = core
        self._known = known if known is not None else KnownRows()
        self._deferred = deferred
        self._aggregate = partial(aggregate_new_rows, config=core)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(
                self._url, autocommit=True, application_name="bikesense-stream", connect_timeout=5
            )
        return self._conn

    def plan(self, enriched: np.ndarray) -> WritePlan | None:
        """The write of ``enriched`` begun outside the transaction (checked and
        de-duplicated, ``storage.writer.plan_write``), for :meth:`write`, which
        aggregates and encodes it before its transaction begins; plans of consecutive
        chunks may be joined first (``storage.writer.join_plans``), and are then
        aggregated once. None when end-of-ride trimming is on, which decides inside
        the transaction what is written."""
        if self._core.privacy.trim_end_s > 0:
            return None
        return plan_write(enriched, None)

    def ready(self, plan: WritePlan) -> WritePlan:
        """``plan`` made ready for its transaction: aggregated, without the cells earlier
        writes registered, every COPY payload encoded (Python work that
        need not wait for a writer: :meth:`write` does what is still left of it).
        Readying early only leaves out less (what committed since is not left out).

        With deferred aggregates the plan is also given its part: to leave its
        aggregates to a later write, or to merge those of the batches waiting now with
        its own. The batches it takes are its own from then on: a write of it that
        fails keeps them for its retry, and if the process stops first their backlog
        records bring them back at the next start (:meth:`recover`)."""
        if self._deferred is None:
            return plan.aggregated(self._aggregate).leaving_out(self._known).encode()
        return self._decided(plan, self._deferred)[0]

    def _decided(
        self, plan: WritePlan, deferred: DeferredAggregates
    ) -> tuple[WritePlan, tuple[DeferredRows, ...]]:
        """``plan`` with its part decided (see :meth:`ready`) and encoded, and the waiting
        batches taken for it now (none if its part was decided before)."""
        if plan.defer or plan.aggregates is not None or not len(plan.rows):
            return plan.encode(), ()
        taken = deferred.take(time.monotonic(), len(plan.rows))
        if taken is None:
            return plan.deferring().encode(), ()
        ready = plan.with_earlier(taken).aggregated(self._aggregate).leaving_out(self._known)
        return ready.encode(), taken

    def _for_transaction(self, plan: WritePlan) -> tuple[WritePlan, tuple[DeferredRows, ...]]:
        """``plan`` ready for its transaction, and the deferred batches it took now (to put
        back if the transaction does not commit)."""
        if self._deferred is None:
            return self.ready(plan), ()
        return self._decided(plan, self._deferred)

    def write(
        self,
        admitted: Admitted,
        enriched: np.ndarray,
        states: KitStates | None = None,
        plan: WritePlan | None = None,
    ) -> WriteOutcome:
        """Write a batch in one transaction. ``states`` are the kit states after the
        batch (``ProcessedBatch.states``); end-of-ride trimming needs them. ``plan``, if
        given, is :meth:`plan` of ``enriched``."""
        trim_end_s = self._core.privacy.trim_end_s
        if trim_end_s > 0 and states is None:
            raise ValueError("end-of-ride trimming is on: write() needs the kit states")
        held = trimmed = 0
        stored_after = None
        taken: tuple[DeferredRows, ...] = ()
        try:
            conn = self._connection()
            trimming = trim_end_s > 0 and states is not None and len(enriched) > 0
            if not trimming and plan is not None:
                # Before the transaction: the aggregates and COPY payloads (Python
                # work, unless the plan came ready), and the partitions, committed on
                # their own (a partition created inside it would keep other writers
                # waiting until it commits). Cells earlier writes registered are left out.
                plan, taken = self._for_transaction(plan)
                stored_after = plan.stored_after
                ensure_partitions(conn, plan.days)
            with conn.transaction():
                to_write: np.ndarray | WritePlan = enriched
                if trimming and states is not None:
                    to_write, held, trimmed = _settle_ride_ends(conn, enriched, states, trim_end_s)
                elif plan is not None:
                    to_write = plan
                result = (
                    write_batch(
                        conn, to_write, self._aggregate, create_partitions=to_write is not plan
                    )
                    if len(enriched)
                    else WriteResult(0, 0, 0)
                )
                stored = insert_rejects(
                    conn,
                    [
                        Reject(
                            payload=r.payload,
                            reason=r.reason,
                            received_ms=r.received_ms,
                            kit_id=r.kit_id,
                            detail=r.detail,
                            topic=r.topic,
                        )
                        for r in admitted.rejects
                    ],
                )
                self._record_kits(conn, admitted, enriched)
                if result.partials_merged:
                    live = plan.all_rows if plan is not None and plan.earlier else enriched
                    conn.execute(
                        "SELECT pg_notify(%s, %s)",
                        (LIVE_CHANNEL, _live_payload(live, self._core)),
                    )
        except BaseException as exc:
            if self._deferred is not None:
                self._deferred.put_back(taken)
            if isinstance(exc, psycopg.OperationalError):
                self._drop_connection()
            raise
        self._committed(plan, result, stored_after)
        return WriteOutcome(
            admitted,
            result.inserted,
            result.duplicates,
            result.partials_merged,
            stored,
            held,
            trimmed,
        )

    def _committed(
        self, plan: WritePlan | None, result: WriteResult, stored_after: AggregateRows | None
    ) -> None:
        """After a write's transaction committed: its deferred readings wait, its cells
        are known."""
        if result.deferred is not None and self._deferred is not None:
            self._deferred.add(dataclasses.replace(result.deferred, stored_s=time.monotonic()))
        if (
            stored_after is not None
            and plan is not None
            and result.inserted == len(plan.rows)
            and result.settled == len(plan.earlier)
        ):
            # Every reading was new and every earlier batch merged here, so every cell
            # they name was registered (or found) in the committed transaction. After a
            # redelivery, or a recovery that took an earlier batch first, only some
            # were: remember nothing then.
            self._known.remember(stored_after)

    def flush(self, *, everything: bool = False) -> int:
        """Merge the aggregates of the deferred batches that waited long enough (every one,
        if ``everything``) in a transaction of their own; returns how many batches'.
        For a writer that has no batch to write (and on stop)."""
        if self._deferred is None:
            return 0
        taken = self._deferred.take_all() if everything else self._deferred.due(time.monotonic())
        if not taken:
            return 0
        empty = np.zeros(0, dtype=ENRICHED_DTYPE)
        plan = WritePlan(empty, [], None).with_earlier(taken).aggregated(self._aggregate)
        plan = plan.leaving_out(self._known).encode()
        try:
            conn = self._connection()
            with conn.transaction():
                result = write_batch(conn, plan, self._aggregate, create_partitions=False)
                if result.partials_merged:
                    conn.execute(
                        "SELECT pg_notify(%s, %s)",
                        (LIVE_CHANNEL, _live_payload(plan.all_rows, self._core)),
                    )
        except BaseException as exc:
            self._deferred.put_back(taken)
            if isinstance(exc, psycopg.OperationalError):
                self._drop_connection()
            raise
        self._committed(plan, result, plan.stored_after)
        return result.settled

    def recover(self) -> int:
        """Merge the aggregates of every reading the backlog names (left by a crash, or by
        a process that stopped before merging them), in one transaction; returns how
        many readings'."""
        try:
            conn = self._connection()
            with conn.transaction():
                recovered = recover_backlog(conn, self._aggregate)
        except psycopg.OperationalError:
            self._drop_connection()
            raise
        if recovered:
            log.info("merged the aggregates of %d readings a previous run left waiting", recovered)
        return recovered

    def _record_kits(
        self, conn: psycopg.Connection[Any], admitted: Admitted, enriched: np.ndarray
    ) -> None:
        seen: dict[int, int] = {}
        if len(enriched):
            # Latest arrival per kit, in one pass: sort by kit, take each run's maximum.
            order = np.argsort(enriched["kit_id"], kind="stable")
            kit_ids = enriched["kit_id"][order]
            starts = np.flatnonzero(np.r_[True, kit_ids[1:] != kit_ids[:-1]])
            latest = np.maximum.reduceat(enriched["received_ms"][order], starts)
            seen = dict(zip(kit_ids[starts].tolist(), latest.tolist(), strict=True))
        for update in admitted.statuses:
            seen[update.kit_id] = max(seen.get(update.kit_id, 0), update.received_ms)
        if not seen:
            return
        # Concurrent writers (DatabaseHandler.writers) update the same kits' rows: lock
        # them in one order first, so that two batches cannot deadlock on them.
        conn.execute(
            "SELECT FROM kits WHERE kit_id = ANY(%s) ORDER BY kit_id FOR NO KEY UPDATE",
            (sorted(seen),),
        )
        for update in admitted.statuses:
            status = dataclasses.asdict(update.status)
            status["status"] = int(update.status.status)
            record_status(
                conn,
                update.kit_id,
                received_ms=update.received_ms,
                status=status,
                battery_pct=update.status.battery_pct,
                firmware_version=update.status.firmware_version,
            )
        touch_last_seen(conn, seen)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        self._drop_connection()


def _settle_ride_ends(
    conn: psycopg.Connection[Any], enriched: np.ndarray, states: KitStates, trim_end_s: float
) -> tuple[np.ndarray, int, int]:
    """Take the held readings of the batch's kits, settle them with the batch's, put
    back what stays held: returns what to store now, how many stay held, how many
    were trimmed."""
    held = take_held(conn, np.unique(enriched["kit_id"]).tolist())
    settled = settle_ride_ends(held, enriched, states, trim_end_s)
    return settled.store, hold(conn, settled.hold), settled.trimmed


def _live_payload(enriched: np.ndarray, core: CoreConfig) -> str:
    """What changed (not the data): metrics, windows and coarsest cells of the batch.

    Computed over the whole batch, a superset of the rows that were new.
    """
    # Columns, not rows, of the placed readings: a merge's rows run to tens of megabytes.
    placed = enriched["cell"] != 0
    coarsest = min(core.resolutions)
    cells: list[int] = (
        np.unique(parent_cells(np.unique(enriched["cell"][placed]), coarsest)).tolist()
        if placed.any()
        else []
    )
    # Windows nest (stream.core.windows): each size's windows are those holding the
    # distinct windows of the sizes' greatest common divisor, far fewer than the readings.
    base = np.unique(window_starts_ms(enriched["ts_ms"][placed], math.gcd(*core.window_sizes_s)))
    windows = {
        (size, int(start))
        for size in core.window_sizes_s
        for start in np.unique(window_starts_ms(base, size)).tolist()
    }
    metrics = [
        m.api_name
        for m, column in METRIC_COLUMNS.items()
        if np.isfinite(enriched[column][placed]).any()
    ]
    return notify_payload(
        metrics=metrics, resolutions=core.resolutions, windows=windows, cells=cells
    )
