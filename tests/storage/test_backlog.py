"""Aggregates merged over several batches stay exactly once (storage.backlog, storage.writer).

A deferring write stores its readings and records the new ones in
``aggregate_backlog``; the write that merges their aggregates deletes the record;
a crash in between leaves the record, which recovery merges and deletes. Whatever
the order, every new reading's aggregates are merged once (docs/design.md
decision 2): the tables end as the all-at-once aggregation of every reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from storage.backlog import KEY_DTYPE, keys_of
from storage.deferred import DeferredRows
from storage.writer import WritePlan, plan_write, recover_backlog, write_batch
from tests.storage.storage_factories import make_readings
from tests.storage.storage_reference import ReferenceAggregate, assert_aggregates_of, snapshot

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def _deferring(rows: np.ndarray) -> WritePlan:
    return plan_write(rows, None).deferring()


def _merging(rows: np.ndarray, earlier: tuple[DeferredRows, ...]) -> WritePlan:
    return plan_write(rows, None).with_earlier(earlier)


def _backlog(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM aggregate_backlog").fetchone()
    assert row is not None
    return int(row[0])


def test_deferred_batches_merged_later_count_every_reading_once(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(800)
    agg = ReferenceAggregate()
    waiting = []
    for a in (0, 200, 400):
        result = write_batch(conn, _deferring(everything[a : a + 200]), agg)
        assert (result.inserted, result.partials_merged) == (200, 0)
        assert result.deferred is not None
        waiting.append(result.deferred)
    assert agg.calls == []  # nothing aggregated while the batches wait
    assert conn.execute("SELECT count(*) FROM cell_windows").fetchone() == (0,)
    assert _backlog(conn) == 3
    # The raw readings are there at once.
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (600,)

    result = write_batch(conn, _merging(everything[600:], tuple(waiting)), agg)
    assert (result.inserted, result.settled) == (200, 3)
    assert [len(c) for c in agg.calls] == [800]  # aggregated once, all together
    assert _backlog(conn) == 0
    assert_aggregates_of(conn, everything)


def test_a_plan_aggregated_before_its_transaction_covers_the_earlier_batches(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(400)
    first = write_batch(conn, _deferring(everything[:200]), ReferenceAggregate()).deferred
    assert first is not None
    planner, writer = ReferenceAggregate(), ReferenceAggregate()
    plan = _merging(everything[200:], (first,)).aggregated(planner)
    assert [len(c) for c in planner.calls] == [400]
    write_batch(conn, plan, writer)
    assert writer.calls == []  # every reading new, the earlier batch settled: as planned
    assert_aggregates_of(conn, everything)


def test_a_crash_before_the_merge_is_recovered_exactly_once(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(600)
    for a in (0, 300):
        write_batch(conn, _deferring(everything[a : a + 300]), ReferenceAggregate())
    # The process dies here: what it held in memory is gone, the backlog is not.
    assert recover_backlog(conn, ReferenceAggregate()) == 600
    assert _backlog(conn) == 0
    assert_aggregates_of(conn, everything)
    before = snapshot(conn)
    assert recover_backlog(conn, ReferenceAggregate()) == 0
    assert snapshot(conn) == before


def test_recovery_reads_the_readings_back_as_they_were_written(
    conn: psycopg.Connection[Any],
) -> None:
    rows = make_readings(120)  # NO2 absent (NaN): read back as the marker, not NULL
    assert np.isnan(rows["no2_ugm3"]).all()
    rows["cell"][::7] = 0  # unplaced readings, stored with a NULL cell
    write_batch(conn, _deferring(rows), ReferenceAggregate())
    seen: list[np.ndarray] = []

    def aggregate(new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(new)
        return ReferenceAggregate()(new)

    recover_backlog(conn, aggregate)
    (back,) = seen
    order = np.lexsort(tuple(back[k] for k in ("idx", "seq", "boot_id", "kit_id")))
    assert (
        back[order].tobytes() == np.sort(rows, order=["kit_id", "boot_id", "seq", "idx"]).tobytes()
    )


def test_a_batch_a_recovery_merged_first_is_not_merged_again(
    conn: psycopg.Connection[Any],
) -> None:
    # Another process starting up recovers the backlog while this one still holds
    # the batch in memory: the record is deleted once, so merged once.
    everything = make_readings(500)
    waiting = write_batch(conn, _deferring(everything[:250]), ReferenceAggregate()).deferred
    assert waiting is not None
    assert recover_backlog(conn, ReferenceAggregate()) == 250
    writer = ReferenceAggregate()
    plan = _merging(everything[250:], (waiting,)).aggregated(ReferenceAggregate())
    result = write_batch(conn, plan, writer)
    assert (result.inserted, result.settled) == (250, 0)
    assert [len(c) for c in writer.calls] == [250]  # only its own readings, in the transaction
    assert_aggregates_of(conn, everything)


def test_a_merge_that_fails_leaves_the_batches_waiting(conn: psycopg.Connection[Any]) -> None:
    everything = make_readings(400)
    waiting = write_batch(conn, _deferring(everything[:200]), ReferenceAggregate()).deferred
    assert waiting is not None

    def failing(_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("aggregation failed")

    with pytest.raises(RuntimeError, match="aggregation failed"):
        write_batch(conn, _merging(everything[200:], (waiting,)), failing)
    assert _backlog(conn) == 1
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (200,)
    # The batch is written again (redelivered) and merges the earlier one after all.
    result = write_batch(conn, _merging(everything[200:], (waiting,)), ReferenceAggregate())
    assert (result.inserted, result.settled) == (200, 1)
    assert_aggregates_of(conn, everything)


def test_a_redelivered_deferring_batch_records_only_what_is_new(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(300)
    write_batch(conn, _deferring(everything[:200]), ReferenceAggregate())
    again = write_batch(conn, _deferring(everything[:200]), ReferenceAggregate())
    assert (again.inserted, again.deferred) == (0, None)
    overlap = write_batch(conn, _deferring(everything[100:]), ReferenceAggregate())
    assert overlap.inserted == 100
    assert overlap.deferred is not None
    assert len(overlap.deferred.rows) == 100
    recorded = conn.execute("SELECT readings, keys FROM aggregate_backlog ORDER BY id").fetchall()
    assert [r[0] for r in recorded] == [200, 100]
    assert bytes(recorded[1][1]) == keys_of(everything[200:])
    assert np.frombuffer(bytes(recorded[1][1]), KEY_DTYPE)["seq"].tolist() == (
        everything[200:]["seq"].tolist()
    )
    assert recover_backlog(conn, ReferenceAggregate()) == 300
    assert_aggregates_of(conn, everything)


def test_plans_refuse_to_defer_and_merge_at_once() -> None:
    plan = plan_write(make_readings(10), None)
    with pytest.raises(ValueError, match="cannot defer"):
        plan.with_earlier((DeferredRows(1, make_readings(10, seq0=9)),)).deferring()
    with pytest.raises(ValueError, match="cannot merge"):
        plan.deferring().with_earlier(())
