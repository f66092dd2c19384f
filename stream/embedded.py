"""The embedded runtime's batch handler: admitted batches through the stream core into PostgreSQL.

The MQTT consumer (``ingest.consumer``) drives it, as one of the two
implementations of its handler interface (``ingest.handler.BatchHandler``; the
other hands readings to Kafka, ``stream.faust_app.ingest``); ``bikesense.runtimes``
puts the two together as the embedded runtime.

- :meth:`DatabaseHandler.prepare` runs on the consumer's prepare stage, chunk after
  chunk in arrival order: the stream core (QA, binning, windows) advances the kit
  states, privacy-zone payloads of rejects are withheld, and the rows are checked
  and de-duplicated for the write (``storage.writer.plan_write``), so that this
  Python work is done outside any transaction;
- :meth:`DatabaseHandler.commit` runs on a writer thread, with a sink (one
  connection) of its own per writer: before the transaction it aggregates the
  batch's rows and encodes the COPY payloads, once per batch (a batch aggregates
  into fewer partials per reading than its chunks would), then writes it in one
  transaction (``stream.sink.PostgresSink.write``). Inside the transaction it only
  runs statements, unless some readings were stored already (a redelivery), when
  it aggregates those that were new;
- :meth:`DatabaseHandler.ready` does that pre-transaction work on the prepare stage
  when the next batch is full and every writer is busy (the consumer asks), and
  the writer that takes it goes straight to its statements.

So while batch N is written and committed, batch N+1 is collected and prepared,
and it grows for as long as the write of N takes, up to the consumer's
``max_batch_messages``: a slow write makes the next batch bigger, and bigger
batches cost the database less per reading (fewer partial-aggregate rows to
merge). Under load two writers run transactions at once (one waiting on the
database's locks or its commit while the other works); the consumer acks their
batches in arrival order all the same.

Under load batches leave their aggregates to a merger thread of the handler's
(``bikesense-merge``, a connection of its own), which merges those of several
batches at once in a transaction of its own, outside the chain of acks
(``storage.deferred``: fewer partial rows per reading, at most about
``aggregate_delay_s`` later than the readings); each such batch records its new
readings in the backlog in its own transaction, so it is durable when acked
(``storage.backlog``). A write merges them itself only if the merger falls far
behind (``DEFERRED_READINGS`` wait: the bound on what waits in memory). The
handler merges what is left on stop, and what a crash left on start.

The kit states continue from the chunks prepared before, even before those
commit: the consumer acks batches in this same order, or (on stop) not at all.

Concurrent writers cannot deadlock: every statement of a batch's transaction
locks rows in key order (readings, cell-windows, presence, cells and kits are
sorted the same way in every batch), and partitions are created before the
transaction, committed on their own. With end-of-ride trimming on there is one
writer: a batch's transaction reads the readings the batch before held back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from bikesense import defaults
from storage.deferred import DeferredAggregates
from storage.writer import KnownRows, WritePlan, join_plans
from stream.core.admitted import Admitted, WriteOutcome, withhold_zone_payloads
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitStates
from stream.sink import PostgresSink

log = logging.getLogger(__name__)

#: Readings whose aggregates may wait at once before a write merges them itself
#: (storage.deferred: the bound on what waits in memory), and how many the merger
#: thread takes at once if ``aggregate_delay_s`` has not come first: about two seconds
#: of a saturated runtime. A merge costs the database per partial row, and readings of
#: the same rides in the same coarse cells share rows only when they are merged
#: together: on the end-to-end benchmark's fleet merges of 120,000 readings stage 0.10
#: cell-window rows per reading against 0.17 at 30,000, and the database spends 12
#: instead of 23 µs per reading on aggregates (bench/RESULTS.md, "Longer merges").
DEFERRED_READINGS = 240_000
MERGE_READINGS = 120_000
#: How often the merger looks whether waiting aggregates are due.
MERGE_POLL_S = 0.05
#: How long a batch's aggregates may wait for later batches' (0: never).
AGGREGATE_DELAY_S = defaults.AGGREGATE_DELAY_S


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Admitted messages processed by the stream core, waiting for their transaction."""

    admitted: Admitted
    #: The enriched rows to store (privacy-withheld rows already left out).
    rows: np.ndarray
    #: Every kit's state after these messages (the sink needs them for end-of-ride
    #: trimming).
    states: KitStates
    #: ``rows`` checked and de-duplicated for the write (``PostgresSink.plan``), so that
    #: this Python work is done here rather than inside the write's transaction.
    plan: WritePlan | None = None

    @classmethod
    def joined(cls, parts: Sequence[PreparedBatch]) -> PreparedBatch:
        """One batch of consecutive prepared chunks, in order."""
        if len(parts) == 1:
            return parts[0]
        plans = [p.plan for p in parts if p.plan is not None]
        return cls(
            Admitted.joined([p.admitted for p in parts]),
            np.concatenate([p.rows for p in parts]),
            parts[-1].states,
            join_plans(plans) if len(plans) == len(parts) else None,
        )


class DatabaseHandler:
    """Prepares admitted batches with the stream core and commits them to PostgreSQL."""

    readies_early = True
    unavailable: Mapping[type[Exception], str] = {psycopg.OperationalError: "database"}

    def __init__(
        self,
        database_url: str,
        core: CoreConfig,
        *,
        writers: int = 2,
        aggregate_delay_s: float = AGGREGATE_DELAY_S,
        deferred_readings: int = DEFERRED_READINGS,
    ) -> None:
        """``writers``: transactions at once, one sink (connection) each; one with
        end-of-ride trimming on, whatever is asked. ``aggregate_delay_s``: how long a
        batch's aggregates may wait to be merged with later batches' (0: never), and
        ``deferred_readings`` how many readings' at most (``storage.deferred``)."""
        if writers < 1:
            raise ValueError(f"writers must be at least 1 (got {writers})")
        self.core = core
        self.writers = 1 if core.privacy.trim_end_s > 0 else writers
        # The sinks share what their commits stored (cells: KnownRows) and the batches
        # whose aggregates wait.
        known = KnownRows()
        self.deferred = (
            DeferredAggregates(
                max_readings=deferred_readings,
                max_delay_s=aggregate_delay_s,
                merge_readings=min(MERGE_READINGS, deferred_readings),
            )
            if aggregate_delay_s > 0
            else None
        )
        self.sinks = [
            PostgresSink(database_url, core, known, self.deferred) for _ in range(self.writers)
        ]
        #: The merger's own connection (its transactions hold no batch's ack).
        self._merger_sink = PostgresSink(database_url, core, known, self.deferred)
        self._merger: threading.Thread | None = None
        self._stop_merging = threading.Event()
        #: Kit states after the last prepared chunk.
        self._states: KitStates = {}
        self._recovered = False

    async def start(self) -> None:
        # What a crash left waiting is merged before anything else; if the database is
        # away, by the first writer that finds itself idle once it is back.
        try:
            await asyncio.to_thread(self._recover)
        except psycopg.OperationalError as exc:
            log.warning("could not merge the aggregates a previous run left waiting: %s", exc)
        if self.deferred is not None and self._merger is None:
            self._stop_merging.clear()
            self._merger = threading.Thread(
                target=self._merge_loop, name="bikesense-merge", daemon=True
            )
            self._merger.start()

    def _merge_loop(self) -> None:
        """The merger: merge the waiting aggregates whenever they are due, until stopped.
        The database being away is waited out (what waits stays recorded)."""
        while not self._stop_merging.wait(MERGE_POLL_S):
            try:
                self._merger_sink.flush()
            except psycopg.OperationalError as exc:
                log.warning("could not merge waiting aggregates (will try again): %s", exc)
                self._stop_merging.wait(1.0)
            except Exception:
                # What waits stays recorded, and a write merges it once too much waits:
                # say what went wrong, and try again.
                log.exception("merging waiting aggregates failed")
                self._stop_merging.wait(1.0)

    def _recover(self) -> None:
        if not self._recovered:
            self.sinks[0].recover()
            self._recovered = True

    async def stop(self) -> None:
        self._stop_merging.set()
        if self._merger is not None:
            await asyncio.to_thread(self._merger.join)
            self._merger = None
        try:
            await asyncio.to_thread(self._merger_sink.flush, everything=True)
        except psycopg.OperationalError as exc:
            # Recorded in the backlog: the next start merges them.
            log.warning("left aggregates waiting for the next start: %s", exc)
        finally:
            for sink in (*self.sinks, self._merger_sink):
                sink.close()

    def idle(self, writer: int) -> None:
        """Writer ``writer`` has no batch to write: merge the aggregates that waited long
        enough (and what a crash left, if the start could not)."""
        self._recover()
        self.sinks[writer].flush()

    def prepare(self, admitted: Admitted) -> PreparedBatch:
        processed = process_batch(admitted.readings, _latest(admitted), self._states, self.core)
        # Each reading keeps the arrival time of its own frame.
        processed.enriched["received_ms"] = admitted.received_ms
        withhold_zone_payloads(admitted, self.core.privacy.zones)
        self._states = processed.states
        rows = processed.to_store()
        return PreparedBatch(admitted, rows, processed.states, self.sinks[0].plan(rows))

    def join(self, chunks: Sequence[PreparedBatch]) -> PreparedBatch:
        return PreparedBatch.joined(chunks)

    def ready(self, batch: PreparedBatch) -> PreparedBatch:
        """Aggregated, without what is known stored, encoded (``PostgresSink.ready``)."""
        if batch.plan is None:
            return batch
        return dataclasses.replace(batch, plan=self.sinks[0].ready(batch.plan))

    def commit(self, batch: PreparedBatch, writer: int) -> WriteOutcome:
        """Write ``batch`` in one transaction on writer ``writer``'s own connection."""
        return self.sinks[writer].write(batch.admitted, batch.rows, batch.states, batch.plan)


def _latest(admitted: Admitted) -> int:
    return int(admitted.received_ms.max()) if len(admitted.received_ms) else 0
