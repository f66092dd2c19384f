"""Presence rows and cells this process's committed writes stored, for later batches to leave out.

A ride stays in a coarse cell, and in a long window, for many batches, and each
batch's aggregation names its presence there again: on the benchmark's fleet
(bench/bench_e2e.py) half the presence rows a batch stages were stored by the
batch just before, and nine in ten of its cells. Sent again they only meet ``ON
CONFLICT DO NOTHING``; left out, every table ends the same, and the database has
half the presence rows to copy, sort and probe.
"""

from __future__ import annotations

import threading

import numpy as np

from storage.aggregate_rows import AggregateRows


class KnownRows:
    """Presence rows and cells the database holds, known from this process's own
    committed writes (:meth:`storage.writer.WritePlan.leaving_out` uses it).

    Only what committed is remembered (the sink remembers a batch whose readings
    were all new): the presence rows of the last ``batches`` to ``2 * batches``
    writes (the repeats come from the batches just before), and cells until there
    are ``max_cells`` (the registry only grows; then it starts again). Thread-safe:
    a runtime's writers share one.

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

    def leave_out(self, rows: AggregateRows) -> AggregateRows:
        """``rows`` without the presence rows and cells known to be stored."""
        with self._lock:
            recent, older, cells = self._recent, self._older, self._cells
            keep = np.array(
                [k not in recent and k not in older for k in rows.presence_keys], dtype=bool
            )
            new_cells = np.array([c not in cells for c in rows.cells.tolist()], dtype=bool)
        if keep.all() and new_cells.all():
            return rows
        return AggregateRows(rows.partials, rows.presence[keep], rows.cells[new_cells])

    def remember(self, rows: AggregateRows) -> None:
        """Record that ``rows``' presence rows and cells are stored (call after the
        write's transaction committed)."""
        with self._lock:
            if self._in_recent == self._batches:
                self._older, self._recent, self._in_recent = self._recent, set(), 0
            self._recent.update(rows.presence_keys)
            self._in_recent += 1
            if len(self._cells) + len(rows.cells) > self._max_cells:
                self._cells.clear()
            self._cells.update(rows.cells.tolist())
