"""End-of-ride trimming in the core: which readings are stored, held or dropped, however batched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.exceptions import InvalidConfigError
from stream.core.privacy import DROP, HOLD, STORE, PrivacyConfig, ride_end_fates, settle_ride_ends
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitState, KitStates, RideSpan
from tests.stream.stream_factories import T0_MS, riding

TRIM_S = 60
CONFIG = CoreConfig(privacy=PrivacyConfig(trim_end_s=TRIM_S))
HOUR_MS = 3_600_000


class HoldingTable:
    """What storage.held does, in memory: the runtime's loop without a database."""

    def __init__(self) -> None:
        self.held: np.ndarray | None = None
        self.stored: list[np.ndarray] = []
        self.trimmed = 0
        self.states: KitStates = {}

    def feed(self, readings: np.ndarray) -> None:
        out = process_batch(readings, int(readings["ts_ms"].max()), self.states, CONFIG)
        self.states = out.states
        batch = out.to_store()
        kits = np.unique(batch["kit_id"])
        held = self.held if self.held is not None else batch[:0]
        mine = np.isin(held["kit_id"], kits)
        settled = settle_ride_ends(held[mine], batch, self.states, TRIM_S)
        self.held = np.concatenate([held[~mine], settled.hold])
        self.stored.append(settled.store)
        self.trimmed += settled.trimmed

    def all_stored(self) -> np.ndarray:
        rows = np.concatenate(self.stored)
        return np.sort(rows["ts_ms"] + rows["kit_id"] * 10 * HOUR_MS * 24)


def test_a_ride_in_progress_keeps_its_last_seconds_held() -> None:
    table = HoldingTable()
    table.feed(riding(600))  # 10 min at 1 Hz
    stored = np.concatenate(table.stored)
    assert table.held is not None
    # Stored: every reading at least 60 s before the ride's latest; held: the rest.
    assert stored["ts_ms"].max() == T0_MS + 539_000
    assert len(stored) == 540
    assert len(table.held) == 60
    assert table.held["ts_ms"].min() == T0_MS + 540_000
    assert table.trimmed == 0


def test_going_on_releases_and_a_new_ride_trims() -> None:
    table = HoldingTable()
    table.feed(riding(600))
    table.feed(riding(30, t0_ms=T0_MS + 600_000, seq0=60))  # the ride goes on 30 s
    assert table.held is not None
    assert sum(len(s) for s in table.stored) == 570
    assert len(table.held) == 60
    # After a pause longer than the ride gap the kit rides again: the first ride is over
    # and its last 60 s are dropped, never stored.
    table.feed(riding(100, t0_ms=T0_MS + HOUR_MS, seq0=200))
    assert table.trimmed == 60
    stored = np.concatenate(table.stored)
    first_ride = stored[stored["ts_ms"] < T0_MS + HOUR_MS]
    assert first_ride["ts_ms"].max() == T0_MS + 569_000
    assert len(first_ride) == 570
    assert len(table.held) == 60  # the second ride's last 60 s, for now


def test_fates_of_a_forgotten_ride_and_with_trimming_off() -> None:
    span = RideSpan(ride_id=11, boot_id=1, start_ms=0, end_ms=100_000)
    newer = RideSpan(ride_id=12, boot_id=1, start_ms=2_000_000, end_ms=2_100_000)
    states = {7: KitState(kit_id=7, rides=(span, newer))}
    kits = np.array([7, 7, 7, 7, 8])
    rides = np.array([11, 11, 12, 99, 11])
    ts = np.array([10_000, 90_000, 2_090_000, 50_000, 10_000])
    np.testing.assert_array_equal(
        ride_end_fates(kits, rides, ts, states, 60), [STORE, DROP, HOLD, DROP, DROP]
    )
    np.testing.assert_array_equal(ride_end_fates(kits, rides, ts, states, 0), [STORE] * 5)


def test_a_redelivered_held_reading_counts_once() -> None:
    out = process_batch(riding(100), T0_MS + 100_000, {}, CONFIG)
    first = settle_ride_ends(out.enriched[:0], out.to_store(), out.states, TRIM_S)
    assert len(first.store) == 40
    assert len(first.hold) == 60
    # The same frames come again (not acked in time): the held copies stay, once each.
    again = process_batch(riding(100), T0_MS + 200_000, out.states, CONFIG)
    second = settle_ride_ends(first.hold, again.to_store(), again.states, TRIM_S)
    assert len(second.hold) == 60
    assert len(np.unique(second.hold[["kit_id", "boot_id", "seq", "idx"]])) == 60


def test_trim_end_is_checked() -> None:
    with pytest.raises(InvalidConfigError, match="trim_end_s"):
        PrivacyConfig(trim_end_s=3601)
    assert PrivacyConfig(trim_end_s=1).active


def _fleet() -> list[np.ndarray]:
    """Two kits, each with two rides an hour apart, as frames of 10 readings."""
    frames = []
    for kit in (3, 4):
        offset = kit * 7_000
        for ride, (start, n) in enumerate(((T0_MS + offset, 400), (T0_MS + HOUR_MS + offset, 250))):
            rows = riding(n, kit_id=kit, t0_ms=start, seq0=ride * 100, seed=kit)
            frames.extend(rows[i : i + 10] for i in range(0, n, 10))
    frames.sort(key=lambda f: int(f["ts_ms"][0]))
    return frames


def _expected() -> np.ndarray:
    """Every reading at least TRIM_S before the end of its ride, whatever the batching."""
    rows = np.concatenate(_fleet())
    out = []
    for kit in (3, 4):
        mine = rows[rows["kit_id"] == kit]
        for lo, hi in ((T0_MS, T0_MS + HOUR_MS), (T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS)):
            ride = mine[(mine["ts_ms"] >= lo) & (mine["ts_ms"] < hi)]
            out.append(ride[ride["ts_ms"] + TRIM_S * 1000 <= ride["ts_ms"].max()])
    both = np.concatenate(out)
    return np.sort(both["ts_ms"] + both["kit_id"] * 10 * HOUR_MS * 24)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    st.lists(st.integers(min_value=0, max_value=200), max_size=5),
)
def test_what_is_stored_does_not_depend_on_batching(sizes: list[int], replays: list[int]) -> None:
    frames = _fleet()
    table = HoldingTable()
    i = 0
    batches = []
    while i < len(frames):
        size = sizes[len(batches) % len(sizes)]
        batches.append(np.concatenate(frames[i : i + size]))
        i += size
    for n, batch in enumerate(batches):
        table.feed(batch)
        if n in replays:  # a batch not acked in time comes again
            table.feed(batch)
    # Both kits' last rides are still going on as far as anyone knows: their tails are held.
    stored = table.all_stored()
    expected = _expected()
    np.testing.assert_array_equal(np.unique(stored), expected)
    assert table.held is not None
    assert len(table.held) == 2 * TRIM_S
    # A replayed batch of a finished ride is trimmed again: counted again, stored never.
    assert table.trimmed == 2 * TRIM_S if not replays else table.trimmed >= 2 * TRIM_S
