"""Rides: split on gaps and boots, ids independent of batching, late data joining known rides."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.rides import RideConfig, assign_rides, ride_id_for, ride_starts_ms
from stream.core.state import KitState
from tests.stream.stream_factories import T0_MS

CONFIG = RideConfig()
MIN = 60_000


def assign_in_batches(
    kit: np.ndarray, boot: np.ndarray, ts: np.ndarray, cuts: list[int]
) -> np.ndarray:
    """Ride ids when the readings arrive as consecutive batches split at ``cuts``."""
    states: dict[int, KitState] = {}
    ids = []
    bounds = [0, *sorted(set(cuts)), len(ts)]
    for a, b in itertools.pairwise(bounds):
        order = np.lexsort((ts[a:b], kit[a:b]))
        result = assign_rides(kit[a:b][order], boot[a:b][order], ts[a:b][order], states, CONFIG)
        batch_ids = np.empty(b - a, dtype=np.int64)
        batch_ids[order] = result.ride_ids
        ids.append(batch_ids)
        states = {**states, **{k: KitState(k, rides=r) for k, r in result.rides.items()}}
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)


def test_a_gap_or_a_new_boot_starts_a_new_ride() -> None:
    ts = np.array([0, 1, 2, 30, 31, 32]) * MIN + T0_MS
    boot = np.array([1, 1, 1, 1, 2, 2])
    kit = np.full(6, 9)
    ids = assign_rides(kit, boot, ts, {}, CONFIG).ride_ids
    assert len(set(ids[:3].tolist())) == 1
    assert ids[3] not in ids[:3]
    assert ids[4] == ids[5] != ids[3]
    assert ids[0] == ride_id_for(9, 1, int(ts[0]))
    assert ride_starts_ms(ids).tolist() == [ts[0]] * 3 + [ts[3], ts[4], ts[4]]


def test_ride_ids_are_positive_and_sort_by_start() -> None:
    a = ride_id_for(1, 1, T0_MS)
    b = ride_id_for(999_999, 77, T0_MS + 1000)
    assert 0 < a < b < 2**63


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.integers(0, 40 * MIN), min_size=1, max_size=60),
    kits=st.lists(st.integers(1, 3), min_size=60, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_in_order_arrival_gives_the_same_ids_however_batched(
    steps: list[int], kits: list[int], cuts: list[int]
) -> None:
    ts = T0_MS + np.cumsum(steps)
    kit = np.array(kits[: len(ts)])
    boot = np.ones(len(ts), dtype=np.int64)
    whole = assign_in_batches(kit, boot, ts, [])
    batched = assign_in_batches(kit, boot, ts, [c for c in cuts if c < len(ts)])
    assert whole.tolist() == batched.tolist()


def test_late_readings_join_the_ride_they_belong_to() -> None:
    kit, boot = np.full(3, 4), np.ones(3, dtype=np.int64)
    now = assign_rides(kit, boot, T0_MS + np.array([60, 61, 62]) * MIN, {}, CONFIG)
    state = {4: KitState(4, rides=now.rides[4])}
    # Buffered readings from 10 minutes before the first seen: same ride, same id.
    late = assign_rides(kit, boot, T0_MS + np.array([50, 51, 52]) * MIN, state, CONFIG)
    assert set(late.ride_ids.tolist()) == set(now.ride_ids.tolist())
    (span,) = late.rides[4]
    assert span.start_ms == T0_MS + 50 * MIN
    # From two hours before: a ride of its own, and both are remembered.
    older = assign_rides(
        kit,
        boot,
        T0_MS + np.array([-60, -59, -58]) * MIN,
        {4: KitState(4, rides=late.rides[4])},
        CONFIG,
    )
    assert older.ride_ids[0] not in now.ride_ids
    assert len(older.rides[4]) == 2


def test_ride_memory_is_bounded() -> None:
    config = RideConfig(max_remembered=3)
    ts = T0_MS + np.arange(10) * 60 * MIN
    result = assign_rides(np.ones(10, dtype=np.int64), np.ones(10, dtype=np.int64), ts, {}, config)
    assert len(set(result.ride_ids.tolist())) == 10
    assert [s.start_ms for s in result.rides[1]] == ts[-3:].tolist()
