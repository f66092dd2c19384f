"""The cell-window COPY rows: every partial in its row, read back field by field."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import cellwindows, copybin
from storage.cellwindows import COLUMNS, HIST_END, HIST_OFFSET, column
from storage.exceptions import BatchError
from stream.core.aggregate import aggregate
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE, Metric
from tests.stream.stream_factories import random_enriched

_FORMATS = {
    "smallint": ">h",
    "integer": ">i",
    "bigint": ">q",
    "double precision": ">d",
    "timestamptz": ">q",
}


def read_rows(payload: bytes) -> list[dict[str, object]]:
    """The rows of a binary COPY of :data:`COLUMNS`, one field at a time (None: NULL)."""
    assert payload[: len(copybin.HEADER)] == copybin.HEADER
    assert payload[-2:] == copybin.TRAILER
    at, rows = len(copybin.HEADER), []
    while at < len(payload) - 2:
        (fields,) = struct.unpack_from(">h", payload, at)
        assert fields == len(COLUMNS)
        at += 2
        row: dict[str, object] = {}
        for col in COLUMNS:
            (size,) = struct.unpack_from(">i", payload, at)
            at += 4
            if size == -1:
                row[col.name] = None
                continue
            if col.sql_type == "integer[]":
                ndim, _, oid, length, lower = struct.unpack_from(">5i", payload, at)
                assert (ndim, oid, length, lower) == (1, 23, HIST_BINS, 1)
                words = struct.unpack_from(f">{2 * HIST_BINS}i", payload, at + 20)
                assert set(words[0::2]) == {4}
                row[col.name] = list(words[1::2])
            else:
                (row[col.name],) = struct.unpack_from(_FORMATS[col.sql_type], payload, at)
            at += size
        rows.append(row)
    assert at == len(payload) - 2
    return rows


def assert_rows_hold(partials: np.ndarray, rows: list[dict[str, object]]) -> None:
    """One row per cell-window of ``partials``, each metric's partial in its columns, a
    metric without one NULL but for its zero n and sums."""
    by_key = {(r["resolution"], r["window_s"], r["window_start"], r["cell"]): r for r in rows}
    keys = {_key(p) for p in partials}
    assert set(by_key) == keys
    assert len(rows) == len(keys)
    seen: dict[tuple[int, int, int, int], set[Metric]] = {k: set() for k in keys}
    for p in partials:
        key = _key(p)
        metric = Metric(int(p["metric"]))
        seen[key].add(metric)
        row = by_key[key]
        assert row[column(metric, "n")] == p["n"]
        for field in ("sum", "sumsq"):
            assert row[column(metric, field)] == p[field]
        for field in ("min", "max"):
            assert row[column(metric, field)] == (None if np.isnan(p[field]) else p[field])
        counted = np.flatnonzero(p["hist"])
        if p["n"] == 0:
            assert row[column(metric, "hist")] is None
        else:
            assert row[column(metric, "hist")] == p["hist"].tolist()
            assert row[column(metric, HIST_OFFSET)] == counted[0]
            assert row[column(metric, HIST_END)] == counted[-1] + 1
        if metric is Metric.NOISE:
            assert row[column(metric, "energy")] == np.nan_to_num(p["energy"])
            assert row[column(metric, "duration_s")] == np.nan_to_num(p["duration_s"])
            lamax = p["lamax_db"]
            assert row[column(metric, "lamax_db")] == (None if np.isnan(lamax) else lamax)
    for key, metrics in seen.items():
        for metric in set(Metric) - metrics:
            row = by_key[key]
            assert row[column(metric, "n")] == 0
            assert row[column(metric, "sum")] == row[column(metric, "sumsq")] == 0
            for field in ("min", "max", "hist", HIST_OFFSET, HIST_END):
                assert row[column(metric, field)] is None


def _key(partial: np.void) -> tuple[int, int, int, int]:
    """A partial's cell-window as its COPY row holds it (the start in PostgreSQL's µs)."""
    start_us = int(partial["window_start_ms"]) * 1000 - copybin.PG_EPOCH_OFFSET_US
    return int(partial["resolution"]), int(partial["window_s"]), start_us, int(partial["cell"])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200), dropped=st.floats(0, 0.9))
def test_every_partial_lands_in_its_cell_windows_row(seed: int, n: int, dropped: float) -> None:
    partials, _ = aggregate(random_enriched(seed, n), [8, 10], [60, 3600])
    rng = np.random.default_rng(seed)
    # Metrics missing from cell-windows anywhere, in any order, LAmax unknown here and there.
    partials = partials[rng.random(len(partials)) >= dropped]
    partials = partials[rng.permutation(len(partials))]
    partials["lamax_db"][rng.random(len(partials)) < 0.2] = np.nan
    assert_rows_hold(partials, read_rows(cellwindows.encode(partials)))


def test_a_partial_without_readings_has_no_histogram() -> None:
    partials, _ = aggregate(random_enriched(3, 50), [10], [3600])
    partials = partials[:3].copy()
    partials["n"][0], partials["hist"][0] = 0, 0
    partials["min"][0] = partials["max"][0] = np.nan
    assert_rows_hold(partials, read_rows(cellwindows.encode(partials)))


def test_partials_that_cannot_be_stored_are_refused() -> None:
    partials, _ = aggregate(random_enriched(3, 50), [10], [3600])
    with pytest.raises(BatchError, match="several partials for one key"):
        cellwindows.encode(np.concatenate([partials, partials[:1]]))
    uncounted = partials.copy()
    uncounted["hist"][0] = 0
    with pytest.raises(BatchError, match="in no histogram bin"):
        cellwindows.encode(uncounted)
    with pytest.raises(TypeError, match="PARTIAL_DTYPE"):
        cellwindows.encode(np.zeros(2, dtype=[("n", "<i8")]))
    assert read_rows(cellwindows.encode(np.zeros(0, PARTIAL_DTYPE))) == []
