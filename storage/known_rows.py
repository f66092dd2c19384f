"""Cells this process's committed writes registered, for later batches to leave out.

A ride stays in a coarse cell for many batches, and each batch's aggregation
names the cell again: on the benchmark's fleet (bench/bench_e2e.py) nine in ten
of the cells a batch names were registered by the batches before. Sent again
they only meet ``ON CONFLICT DO NOTHING``; left out, ``h3_cells`` ends the same.

Presence rows were left out the same way until they carried each ride's readings
and noise energy (migrations/0112_presence_shares.sql): a later batch of the same
ride in a cell-window now adds to its row, so every presence row is sent.
"""

from __future__ import annotations

import threading

import numpy as np

from storage.aggregate_rows import AggregateRows


class KnownRows:
    """Cells the database holds, known from this process's own committed writes
    (:meth:`storage.writer.WritePlan.leaving_out` uses it).

    Only what committed is remembered (the sink remembers a batch whose readings
    were all new), until there are ``max_cells`` (the registry only grows; then it
    starts again). Thread-safe: a runtime's writers share one.
    """

    def __init__(self, max_cells: int = 1_000_000) -> None:
        if max_cells < 1:
            raise ValueError("KnownRows needs max_cells >= 1")
        self._lock = threading.Lock()
        self._cells: set[int] = set()
        self._max_cells = max_cells

    def leave_out(self, rows: AggregateRows) -> AggregateRows:
        """``rows`` without the cells known to be registered."""
        with self._lock:
            cells = self._cells
            new_cells = np.array([c not in cells for c in rows.cells.tolist()], dtype=bool)
        if new_cells.all():
            return rows
        return AggregateRows(rows.partials, rows.presence, rows.cells[new_cells])

    def remember(self, rows: AggregateRows) -> None:
        """Record that ``rows``' cells are registered (call after the write's
        transaction committed)."""
        with self._lock:
            if len(self._cells) + len(rows.cells) > self._max_cells:
                self._cells.clear()
            self._cells.update(rows.cells.tolist())
