"""Aggregates merged over several batches: which batches wait, and when they are merged.

Merging a batch's aggregates costs the database per partial row, not per
reading, and the batches that follow one another name mostly the same coarse
cell-windows and rides: on the end-to-end benchmark's fleet a batch of 10,000
readings stages 0.29 ``cell_windows`` rows and 0.65 presence rows per reading,
four batches together 0.14 and 0.41 (bench/RESULTS.md, "Aggregates merged over
several batches"). So the embedded runtime's writers store each batch's readings
in its own transaction, as before, and may leave its aggregates to a later one:
:class:`DeferredAggregates` holds the new readings of the batches that wait, and a
merger (the runtime's ``bikesense-merge`` thread: ``stream.sink.PostgresSink.flush``
on a connection of its own, outside the chain of acks) takes them with :meth:`due`,
aggregates them together and merges the lot once.

What keeps docs/design.md decision 2 true meanwhile is in storage/backlog.py: a
waiting batch's transaction records its new readings in ``aggregate_backlog``,
and the transaction that merges their aggregates deletes that record.

The merger takes the waiting batches once the oldest has waited ``max_delay_s`` or
``merge_readings`` wait. A write takes them itself (:meth:`take`, merging them with its
own readings) only when about ``max_readings`` wait, the bound on what waits in memory
if the merger falls behind (two writers deciding at the same moment may each add a
batch past it); on stop, :meth:`take_all`. The raw readings are visible as soon as
their transaction commits; the aggregates, about ``max_delay_s`` later.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DeferredRows:
    """Readings new in a committed transaction whose aggregates wait."""

    #: The ``aggregate_backlog`` row that names them (storage.backlog.record).
    backlog_id: int
    #: The readings (``ENRICHED_DTYPE``), as they were stored.
    rows: np.ndarray
    #: ``time.monotonic()`` when their transaction committed.
    stored_s: float = 0.0


class DeferredAggregates:
    """The readings whose aggregates wait, shared by a runtime's writers (thread-safe)."""

    def __init__(
        self,
        *,
        max_readings: int = 40_000,
        max_delay_s: float = 0.5,
        merge_readings: int | None = None,
    ) -> None:
        """``merge_readings``: a merger of its own (:meth:`due`) takes the waiting batches
        once this many readings wait, before a write would (``max_readings``)."""
        if max_readings < 1:
            raise ValueError(f"max_readings must be at least 1 (got {max_readings})")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s cannot be negative (got {max_delay_s})")
        if merge_readings is not None and not 0 < merge_readings <= max_readings:
            raise ValueError(f"merge_readings must be in 1..max_readings (got {merge_readings})")
        self.max_readings = max_readings
        self.max_delay_s = max_delay_s
        self.merge_readings = merge_readings
        self._lock = threading.Lock()
        self._waiting: list[DeferredRows] = []

    @property
    def waiting_readings(self) -> int:
        with self._lock:
            return sum(len(d.rows) for d in self._waiting)

    def take(self, now_s: float, incoming: int) -> tuple[DeferredRows, ...] | None:
        """For a write of ``incoming`` readings at ``now_s`` (``time.monotonic()``): every
        waiting batch, taken out, to merge with it; or None when it should wait too
        (there is room, and the oldest has not waited ``max_delay_s``)."""
        with self._lock:
            waiting = sum(len(d.rows) for d in self._waiting)
            oldest = min((d.stored_s for d in self._waiting), default=now_s)
            if waiting + incoming < self.max_readings and now_s - oldest < self.max_delay_s:
                return None
            taken = tuple(self._waiting)
            self._waiting.clear()
            return taken

    def due(self, now_s: float) -> tuple[DeferredRows, ...]:
        """Every waiting batch, taken out, if the oldest has waited ``max_delay_s`` or
        ``merge_readings`` wait; else none (for a merger, or a writer with nothing else to
        do)."""
        with self._lock:
            if not self._waiting:
                return ()
            waiting = sum(len(d.rows) for d in self._waiting)
            oldest = min(d.stored_s for d in self._waiting)
            enough = self.merge_readings is not None and waiting >= self.merge_readings
            if now_s - oldest < self.max_delay_s and not enough:
                return ()
            taken = tuple(self._waiting)
            self._waiting.clear()
            return taken

    def take_all(self) -> tuple[DeferredRows, ...]:
        """Every waiting batch, taken out (on stop)."""
        with self._lock:
            taken = tuple(self._waiting)
            self._waiting.clear()
            return taken

    def add(self, deferred: DeferredRows) -> None:
        """A batch whose transaction committed without its aggregates."""
        with self._lock:
            self._waiting.append(deferred)

    def put_back(self, taken: tuple[DeferredRows, ...]) -> None:
        """Batches taken for a write whose transaction did not commit: they wait again
        (their backlog rows are still there)."""
        if taken:
            with self._lock:
                self._waiting[:0] = taken
