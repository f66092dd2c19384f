"""Aggregates merged over several batches, through the sink (storage.deferred, stream.sink).

The sink stores every batch's readings at once and leaves its aggregates to a
later write while there is room and time; whichever write merges them, a failed
transaction, a crash or a stop, every reading's aggregates end merged once
(docs/design.md decision 2; the storage side: tests/storage/test_backlog.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from firmware_protocol.readings import READING_DTYPE
from ingest.admission import Admitted
from storage.deferred import DeferredAggregates, DeferredRows
from storage.kits import MasterKey, register_kit
from stream import sink as sink_module
from stream.core.process import CoreConfig, aggregate_new_rows
from stream.embedded import DatabaseHandler
from stream.sink import PostgresSink
from tests.runtime_harness import wait_for
from tests.storage.storage_factories import make_readings
from tests.storage.storage_reference import assert_aggregates_of

CORE = CoreConfig(resolutions=(8, 10), window_sizes_s=(60, 3600))
NOTHING = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))


# -- when batches wait, without a database --------------------------------------------------


def _waiting(n: int, backlog_id: int = 1, stored_s: float = 0.0) -> DeferredRows:
    return DeferredRows(backlog_id, make_readings(n), stored_s)


def test_a_write_waits_while_there_is_room_and_time() -> None:
    deferred = DeferredAggregates(max_readings=1_000, max_delay_s=0.5)
    assert deferred.take(10.0, 400) is None  # nothing waits: the first batch waits
    deferred.add(_waiting(400, 1, 10.0))
    assert deferred.take(10.2, 400) is None  # 800 < 1,000 and 0.2 s < 0.5 s
    deferred.add(_waiting(400, 2, 10.2))
    taken = deferred.take(10.3, 200)  # 1,000 readings: merge them
    assert taken is not None
    assert [d.backlog_id for d in taken] == [1, 2]
    assert deferred.waiting_readings == 0


def test_a_write_merges_what_waited_too_long() -> None:
    deferred = DeferredAggregates(max_readings=1_000, max_delay_s=0.5)
    deferred.add(_waiting(10, 1, 10.0))
    assert deferred.due(10.49) == ()
    assert deferred.take(10.49, 10) is None
    taken = deferred.take(10.5, 10)
    assert taken is not None
    assert [d.backlog_id for d in taken] == [1]


def test_an_idle_writer_merges_only_what_is_due() -> None:
    deferred = DeferredAggregates(max_readings=1_000, max_delay_s=0.5)
    assert deferred.due(100.0) == ()
    deferred.add(_waiting(10, 1, 10.0))
    deferred.add(_waiting(10, 2, 10.4))
    assert deferred.due(10.45) == ()
    assert [d.backlog_id for d in deferred.due(10.5)] == [1, 2]  # the oldest is due: all go


def test_batches_put_back_wait_again_first() -> None:
    deferred = DeferredAggregates(max_readings=1_000, max_delay_s=0.5)
    deferred.add(_waiting(10, 1, 10.0))
    taken = deferred.take_all()
    deferred.add(_waiting(10, 2, 10.1))
    deferred.put_back(taken)
    assert [d.backlog_id for d in deferred.take_all()] == [1, 2]


def test_a_merger_takes_them_once_enough_wait() -> None:
    deferred = DeferredAggregates(max_readings=1_000, max_delay_s=0.5, merge_readings=500)
    deferred.add(_waiting(400, 1, 10.0))
    assert deferred.due(10.1) == ()
    assert deferred.take(10.1, 400) is None  # a write still waits: 800 < 1,000
    deferred.add(_waiting(400, 2, 10.1))
    assert [d.backlog_id for d in deferred.due(10.2)] == [1, 2]  # 800 >= 500
    with pytest.raises(ValueError, match="merge_readings"):
        DeferredAggregates(max_readings=100, merge_readings=200)


def test_no_delay_means_every_write_merges_its_own() -> None:
    assert DeferredAggregates(max_delay_s=0.0).take(10.0, 1) == ()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_readings"):
        DeferredAggregates(max_readings=0)
    with pytest.raises(ValueError, match="max_delay_s"):
        DeferredAggregates(max_delay_s=-1.0)


# -- through the sink, on the database ------------------------------------------------------


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        register_kit(c, MasterKey.generate(), 1)
        yield c


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def _assert_aggregates_of(conn: psycopg.Connection[Any], everything: np.ndarray) -> None:
    """The tables hold the stream core's aggregation of ``everything`` at once."""
    assert_aggregates_of(conn, everything, lambda rows: aggregate_new_rows(rows, CORE))


def _write(sink: PostgresSink, rows: np.ndarray) -> int:
    return sink.write(NOTHING, rows, None, sink.plan(rows)).inserted


@pytest.mark.postgres
def test_batches_wait_and_are_merged_once(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    everything = make_readings(800)
    deferred = DeferredAggregates(max_readings=700, max_delay_s=3_600.0)
    sink = PostgresSink(migrated_database_url, CORE, deferred=deferred)
    try:
        for a in (0, 200, 400):
            assert _write(sink, everything[a : a + 200]) == 200
        # Readings at once; aggregates waiting, recorded in the backlog.
        assert (_count(conn, "readings"), _count(conn, "cell_windows")) == (600, 0)
        assert _count(conn, "aggregate_backlog") == 3
        assert deferred.waiting_readings == 600
        assert sink.flush() == 0  # nothing waited long enough
        # 600 waiting + 200 reach 700: this write merges all four batches.
        assert _write(sink, everything[600:]) == 200
        assert (_count(conn, "aggregate_backlog"), deferred.waiting_readings) == (0, 0)
        _assert_aggregates_of(conn, everything)
    finally:
        sink.close()


@pytest.mark.postgres
def test_a_merge_whose_transaction_fails_leaves_the_batches_waiting(
    conn: psycopg.Connection[Any], migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = make_readings(400)
    deferred = DeferredAggregates(max_readings=300, max_delay_s=3_600.0)
    sink = PostgresSink(migrated_database_url, CORE, deferred=deferred)
    try:
        _write(sink, everything[:200])

        def failing_rejects(*_args: Any, **_kwargs: Any) -> int:
            raise psycopg.errors.QueryCanceled("the batch's transaction fails after its writes")

        with monkeypatch.context() as patched:
            patched.setattr(sink_module, "insert_rejects", failing_rejects)
            with pytest.raises(psycopg.errors.QueryCanceled):
                _write(sink, everything[200:])
        assert (_count(conn, "readings"), _count(conn, "aggregate_backlog")) == (200, 1)
        assert deferred.waiting_readings == 200
        # Delivered again: it merges the waiting batch with its own.
        assert _write(sink, everything[200:]) == 200
        assert _count(conn, "aggregate_backlog") == 0
        _assert_aggregates_of(conn, everything)
    finally:
        sink.close()


@pytest.mark.postgres
def test_stop_merges_what_waits_and_start_what_a_crash_left(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    everything = make_readings(600)
    crashed = DatabaseHandler(migrated_database_url, CORE, aggregate_delay_s=3_600.0)
    _write(crashed.sinks[0], everything[:300])
    crashed.sinks[0].close()  # the process dies with a batch waiting in memory
    assert _count(conn, "aggregate_backlog") == 1

    handler = DatabaseHandler(migrated_database_url, CORE, aggregate_delay_s=3_600.0)
    asyncio.run(handler.start())  # merges what the crash left
    assert _count(conn, "aggregate_backlog") == 0
    _assert_aggregates_of(conn, everything[:300])
    _write(handler.sinks[1], everything[300:])  # the other writer, the same waiting batches
    assert handler.deferred is not None
    assert handler.deferred.waiting_readings == 300
    asyncio.run(handler.stop())  # merges what waits
    assert _count(conn, "aggregate_backlog") == 0
    _assert_aggregates_of(conn, everything)


@pytest.mark.postgres
def test_without_a_delay_every_batch_merges_its_own(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    handler = DatabaseHandler(migrated_database_url, CORE, aggregate_delay_s=0.0)
    assert handler.deferred is None
    everything = make_readings(200)
    try:
        _write(handler.sinks[0], everything)
        assert _count(conn, "aggregate_backlog") == 0
        _assert_aggregates_of(conn, everything)
    finally:
        asyncio.run(handler.stop())


@pytest.mark.postgres
def test_an_idle_writer_merges_what_waited(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    # A delay of a microsecond: the write waits (nothing waited before it), and by the
    # time a writer finds itself idle the batch has waited long enough.
    handler = DatabaseHandler(migrated_database_url, CORE, aggregate_delay_s=1e-6)
    everything = make_readings(200)
    try:
        _write(handler.sinks[0], everything)
        assert _count(conn, "aggregate_backlog") == 1
        handler.idle(1)
        assert _count(conn, "aggregate_backlog") == 0
        _assert_aggregates_of(conn, everything)
    finally:
        asyncio.run(handler.stop())


@pytest.mark.postgres
def test_a_batch_readied_early_keeps_the_batches_it_took_for_its_retry(
    conn: psycopg.Connection[Any], migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = make_readings(400)
    deferred = DeferredAggregates(max_readings=300, max_delay_s=3_600.0)
    sink = PostgresSink(migrated_database_url, CORE, deferred=deferred)
    try:
        _write(sink, everything[:200])
        second = everything[200:]
        # Readied on the prepare stage while the writers are busy: it takes the waiting
        # batch, and is aggregated with it there.
        plan = sink.ready(sink.plan(second))
        assert [len(d.rows) for d in plan.earlier] == [200]
        assert plan.aggregates is not None
        assert deferred.waiting_readings == 0

        def failing_rejects(*_args: Any, **_kwargs: Any) -> int:
            raise psycopg.errors.QueryCanceled("the batch's transaction fails after its writes")

        with monkeypatch.context() as patched:
            patched.setattr(sink_module, "insert_rejects", failing_rejects)
            with pytest.raises(psycopg.errors.QueryCanceled):
                sink.write(NOTHING, second, None, plan)
        # The plan keeps the batch it took (no other write may take it meanwhile) ...
        assert deferred.waiting_readings == 0
        assert _count(conn, "aggregate_backlog") == 1
        # ... and its retry merges it, once.
        assert sink.write(NOTHING, second, None, plan).inserted == 200
        assert _count(conn, "aggregate_backlog") == 0
        _assert_aggregates_of(conn, everything)
    finally:
        sink.close()


@pytest.mark.postgres
def test_the_merger_merges_what_waits_beside_the_writers(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    handler = DatabaseHandler(migrated_database_url, CORE, aggregate_delay_s=1e-6)
    everything = make_readings(400)
    asyncio.run(handler.start())
    try:
        for a in (0, 200):
            _write(handler.sinks[a // 200], everything[a : a + 200])
        # Nothing else writes: the merger, on its own connection, merges both batches.
        wait_for(lambda: _count(conn, "aggregate_backlog") == 0, what="the merger's merge")
        _assert_aggregates_of(conn, everything)
    finally:
        asyncio.run(handler.stop())
    assert _count(conn, "aggregate_backlog") == 0
