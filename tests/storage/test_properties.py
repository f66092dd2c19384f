"""Hypothesis: whatever the batching, order and redelivery, and whether a batch was planned
(aggregated) before its transaction, the stored aggregates are those of aggregating all the
readings at once (docs/design.md decisions 1 and 2)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.writer import WritePlan, join_plans, plan_write, write_batch
from stream.core.aggregate import aggregate
from stream.core.partials import PARTIAL_DTYPE, PARTIAL_KEY_FIELDS
from tests.storage.storage_factories import T0_MS, make_readings
from tests.storage.storage_reference import presence_ride_counts, ride_counts, stored_ride_counts

pytestmark = pytest.mark.postgres

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(60, 900), day_tz="UTC"
)


@pytest.fixture(scope="module")
def readings() -> np.ndarray:
    # Two kits, two rides, spread over half an hour with a gap: several windows and cells.
    a = make_readings(90, kit_id=1, ride_id=1, seed=1, step_ms=7_000)
    b = make_readings(60, kit_id=2, ride_id=2, seed=2, t0_ms=T0_MS + 1_200_000, step_ms=11_000)
    b["noise_laeq_db"][::5] = np.nan
    return np.concatenate([a, b])


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def stored(conn: psycopg.Connection[Any]) -> np.ndarray:
    rows = conn.execute(
        "SELECT metric, resolution, cell, window_s,"
        " (extract(epoch FROM window_start) * 1000)::bigint,"
        " n, sum, sumsq, min, max, energy, duration_s, COALESCE(lamax_db, 'NaN'), hist"
        " FROM window_partials ORDER BY metric, resolution, cell, window_s, window_start"
    ).fetchall()
    return np.array([tuple(r) for r in rows], dtype=PARTIAL_DTYPE)


def expected_partials(readings: np.ndarray) -> np.ndarray:
    partials, _ = AGGREGATE(readings)
    order = np.lexsort(tuple(partials[k] for k in reversed(PARTIAL_KEY_FIELDS)))
    return partials[order]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_batching_gives_the_all_at_once_aggregates(
    conn: psycopg.Connection[Any], readings: np.ndarray, data: st.DataObject
) -> None:
    conn.execute("TRUNCATE readings, cell_windows, window_presence, window_rides, h3_cells")
    n = len(readings)
    order = data.draw(st.permutations(range(n)), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=6), label="cuts"))
    shuffled = readings[np.array(order)]
    batches = np.split(shuffled, cuts)
    # Redeliver some batches, and some overlapping slices of the whole.
    replays = data.draw(st.lists(st.integers(0, len(batches) - 1), max_size=3), label="replays")
    overlaps = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 40)), max_size=2), label="overlaps"
    )
    extra = [batches[i] for i in replays] + [shuffled[a : a + k] for a, k in overlaps]
    # Each batch written as it is, or planned outside the transaction (aggregated as if
    # all new), or as the join of plans of its two halves, as the embedded runtime does.
    ways = data.draw(
        st.lists(
            st.sampled_from(["array", "plan", "joined"]),
            min_size=len(batches + extra),
            max_size=len(batches + extra),
        ),
        label="ways",
    )

    def prepared(batch: np.ndarray, way: str) -> np.ndarray | WritePlan:
        if way == "plan":
            return plan_write(batch, AGGREGATE)
        if way == "joined":
            half = len(batch) // 2
            return join_plans(
                [plan_write(batch[:half], AGGREGATE), plan_write(batch[half:], AGGREGATE)]
            )
        return batch

    inserted = sum(
        write_batch(conn, prepared(b, way), AGGREGATE).inserted
        for b, way in zip(batches + extra, ways, strict=True)
    )
    assert inserted == n

    got, want = stored(conn), expected_partials(readings)
    assert len(got) == len(want)
    for name in (*PARTIAL_KEY_FIELDS, "n", "min", "max", "hist"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # Floating sums depend on the order of addition; they agree to rounding.
    for name in ("sum", "sumsq", "energy", "duration_s"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(got["lamax_db"], want["lamax_db"])
    all_at_once = AGGREGATE(readings)[1]
    presence = conn.execute("SELECT count(*) FROM window_presence").fetchone()
    assert presence == (len(all_at_once),)
    # The ride counter kept by the writer is what counting the presence rows gives.
    counts = stored_ride_counts(conn)
    assert counts == presence_ride_counts(conn)
    assert counts == ride_counts(all_at_once)
