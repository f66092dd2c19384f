"""Cells committed writes registered are left out of later batches (storage.known_rows.KnownRows).

Consecutive batches of a ride name most of its cells again. The sink leaves out
those its earlier commits registered, remembers a batch's only once its transaction
committed, and the tables end exactly as if everything had been sent. Presence rows
are never left out: a later batch adds its readings and noise energy to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from firmware_protocol.readings import READING_DTYPE
from ingest.admission import Admitted
from storage.kits import MasterKey, register_kit
from storage.known_rows import KnownRows
from storage.writer import plan_write
from stream import sink as sink_module
from stream.core.process import CoreConfig, aggregate_new_rows
from stream.sink import PostgresSink
from tests.storage.storage_factories import make_readings
from tests.storage.storage_reference import TABLES, snapshot

CORE = CoreConfig()


def _aggregates(rows: np.ndarray) -> Any:
    plan = plan_write(rows, lambda r: aggregate_new_rows(r, CORE))
    assert plan.aggregates is not None
    return plan.aggregates


def _keys(aggregates: Any) -> set[int]:
    return set(aggregates.cells.tolist())


def test_cells_remembered_are_left_out_and_presence_rows_never() -> None:
    ride = make_readings(900)
    first, second = _aggregates(ride[:450]), _aggregates(ride[450:])
    known = KnownRows()
    assert known.leave_out(second) is second  # nothing known yet
    known.remember(first)
    left = known.leave_out(second)
    repeated = _keys(first) & _keys(second)
    assert repeated  # the ride's coarse cells repeat ...
    assert _keys(second) - repeated  # ... not all of them
    assert _keys(left) == _keys(second) - repeated
    # The partials and the presence rows are never left out: they add up.
    assert left.partials is second.partials
    assert left.presence is second.presence


def test_cells_start_again_past_their_limit() -> None:
    ride = make_readings(900)
    first = _aggregates(ride[:450])
    known = KnownRows(max_cells=len(first.cells))
    known.remember(first)
    assert len(known.leave_out(first).cells) == 0
    known.remember(_aggregates(make_readings(100, kit_id=2, ride_id=2, lat0=48.1, lon0=11.5)))
    assert len(known.leave_out(first).cells) == len(first.cells)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_cells >= 1"):
        KnownRows(max_cells=0)


# -- through the sink, on the database -----------------------------------------------------


class _Forgetful(KnownRows):
    """Leaves nothing out: everything is sent, as before KnownRows."""

    def leave_out(self, aggregates: Any) -> Any:
        return aggregates


class _Counting(KnownRows):
    def __init__(self) -> None:
        super().__init__()
        self.left_out = 0

    def leave_out(self, aggregates: Any) -> Any:
        kept = super().leave_out(aggregates)
        self.left_out += len(aggregates.cells) - len(kept.cells)
        return kept


class _Recording(KnownRows):
    def __init__(self) -> None:
        super().__init__()
        self.remembered: list[Any] = []

    def remember(self, aggregates: Any) -> None:
        self.remembered.append(aggregates)
        super().remember(aggregates)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        master = MasterKey.generate()
        for kit in (1, 2):
            register_kit(c, master, kit)
        yield c


def _batches() -> list[np.ndarray]:
    """Two kits' rides, 100 readings of each per batch, six batches."""
    one = make_readings(600, kit_id=1, ride_id=1)
    two = make_readings(600, kit_id=2, ride_id=2, lat0=52.1, lon0=5.13, seed=1)
    return [np.concatenate([one[i : i + 100], two[i : i + 100]]) for i in range(0, 600, 100)]


def _write(url: str, known: KnownRows, batches: list[np.ndarray]) -> None:
    sink = PostgresSink(url, CORE, known)
    try:
        for rows in batches:
            admitted = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))
            outcome = sink.write(admitted, rows, None, sink.plan(rows))
            assert outcome.inserted == len(rows)
    finally:
        sink.close()


@pytest.mark.postgres
def test_tables_end_as_if_everything_had_been_sent(
    conn: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    counting = _Counting()
    _write(migrated_database_url, counting, _batches())
    assert counting.left_out > 0
    leaving_out = snapshot(conn)
    conn.execute("TRUNCATE " + ", ".join(TABLES))  # type: ignore[call-overload]
    _write(migrated_database_url, _Forgetful(), _batches())
    assert snapshot(conn) == leaving_out
    assert leaving_out["window_rides"]  # the comparison compared something


@pytest.mark.postgres
def test_a_batch_is_remembered_only_once_it_committed(
    conn: psycopg.Connection[Any],
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, *rest = _batches()
    known = KnownRows()

    def failing_rejects(*_args: Any, **_kwargs: Any) -> int:
        raise psycopg.errors.QueryCanceled("the batch's transaction fails after its writes")

    with monkeypatch.context() as patched:
        patched.setattr(sink_module, "insert_rejects", failing_rejects)
        with pytest.raises(psycopg.errors.QueryCanceled):
            _write(migrated_database_url, known, [first])
    assert conn.execute("SELECT count(*) FROM window_presence").fetchone() == (0,)
    # Written again (redelivered): every cell goes in, none is thought registered.
    _write(migrated_database_url, known, [first, *rest])
    written = snapshot(conn)
    conn.execute("TRUNCATE " + ", ".join(TABLES))  # type: ignore[call-overload]
    _write(migrated_database_url, _Forgetful(), [first, *rest])
    assert snapshot(conn) == written


@pytest.mark.postgres
def test_a_batch_with_readings_stored_before_is_not_remembered(
    conn: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    # Only a batch whose readings were all new registered (or found) every cell it
    # names; after a redelivery the writer aggregated only the new readings.
    first, second, *_ = _batches()
    known = KnownRows()
    _write(migrated_database_url, known, [first])
    both = np.concatenate([first, second])
    sink = PostgresSink(migrated_database_url, CORE, known)
    try:
        admitted = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))
        assert sink.write(admitted, both, None, sink.plan(both)).inserted == len(second)
    finally:
        sink.close()
    new_to_second = _keys(_aggregates(second)) - _keys(_aggregates(first))
    assert new_to_second
    assert _keys(known.leave_out(_aggregates(second))) == new_to_second


@pytest.mark.postgres
def test_a_plan_readied_before_the_write_before_it_commits(
    conn: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    # The prepare stage readies a full batch while every writer is busy
    # (PostgresSink.ready): it leaves out only what was known stored then, its write
    # stores the rest, and once it commits, all of it is remembered.
    batches = _batches()
    full = _aggregates(batches[2])
    known = _Recording()
    sink = PostgresSink(migrated_database_url, CORE, known)
    admitted = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))
    try:
        sink.write(admitted, batches[0], None, sink.plan(batches[0]))
        early = sink.ready(sink.plan(batches[2]))  # batch 1 not written yet
        assert early.aggregates is not None
        assert early.stored_after is not None
        assert _keys(early.stored_after) == _keys(full)
        assert _keys(early.aggregates) == _keys(full) - _keys(_aggregates(batches[0]))
        assert _keys(early.aggregates) < _keys(full)
        assert sink.ready(early) is early  # readied once only
        for rows, plan in ((batches[1], sink.plan(batches[1])), (batches[2], early)):
            assert sink.write(admitted, rows, None, plan).inserted == len(rows)
    finally:
        sink.close()
    assert known.remembered[-1] is early.stored_after
    assert not _keys(known.leave_out(full))
    written = snapshot(conn)
    conn.execute("TRUNCATE " + ", ".join(TABLES))  # type: ignore[call-overload]
    _write(migrated_database_url, _Forgetful(), batches[:3])
    assert snapshot(conn) == written
