"""Rides: contiguous trips of one kit, with ids that do not depend on how data arrives.

A ride is a run of one kit's readings within one boot with no gap longer than
:attr:`RideConfig.gap_s` (20 minutes: a postal round pauses at the depot and at
lunch, a mail stop takes minutes). Distinct rides and days are what the
k-anonymity threshold counts (docs/design.md decision 4), so a ride must keep its id
whichever way its readings are batched.

The id packs the ride's start second and a hash of (kit, boot)::

    ride_id = start_s << 29 | blake2b(kit_id, boot_id) & (2**29 - 1)

so it is positive, sorts by start time, and tells its own start without a
lookup (``aggregate`` takes the ride's day from it). Two kits starting a ride in
the same second collide with probability 2**-29.

Limits, all on late data: readings are matched against the rides the kit state
remembers (:attr:`RideConfig.memory_s`, at most :attr:`RideConfig.max_remembered`).
A late upload within the gap of a remembered ride joins that ride even if it
starts before it (the id keeps the first-seen start); one that bridges two
remembered rides joins the earlier and leaves the other as it is (stored ids are
never rewritten); one older than the memory starts a ride of its own. With data
arriving in time order, ids are exactly those of one batch holding everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream.core.exceptions import InvalidConfigError
from stream.core.state import KitState, RideSpan

_HASH_BITS = 29
_HASH_MASK = (1 << _HASH_BITS) - 1
_MAX_START_S = (1 << (63 - _HASH_BITS)) - 1


@dataclass(frozen=True, slots=True)
class RideConfig:
    gap_s: float = 20 * 60.0  # a longer pause ends the ride
    memory_s: float = 2 * 24 * 3600.0  # how far back late data can still join a ride
    max_remembered: int = 16  # rides kept per kit state, newest first

    def __post_init__(self) -> None:
        if not self.gap_s > 0 or not self.memory_s >= self.gap_s or self.max_remembered < 1:
            msg = (
                "RideConfig needs gap_s > 0, memory_s >= gap_s and max_remembered >= 1 "
                f"(got {self.gap_s!r}, {self.memory_s!r}, {self.max_remembered!r})"
            )
            raise InvalidConfigError(msg)


def ride_id_for(kit_id: int, boot_id: int, start_ms: int) -> int:
    """The id of the ride of ``kit_id`` and ``boot_id`` that starts at ``start_ms``."""
    digest = hashlib.blake2b(
        f"{kit_id}:{boot_id}".encode(), digest_size=8, person=b"bikesense-ride"
    ).digest()
    start_s = min(max(start_ms // 1000, 0), _MAX_START_S)
    return (start_s << _HASH_BITS) | (int.from_bytes(digest, "big") & _HASH_MASK)


def ride_starts_ms(ride_ids: np.ndarray) -> np.ndarray:
    """Start time (epoch ms, to the second) encoded in each ride id."""
    return (np.asarray(ride_ids, dtype=np.int64) >> _HASH_BITS) * 1000


@dataclass(frozen=True, slots=True)
class RideAssignment:
    """Rides of a batch sorted by (kit, time), as segments of consecutive readings."""

    ride_ids: np.ndarray  # int64 per reading
    segment_starts: np.ndarray  # index of each segment's first reading; segments cover all
    segment_rides: np.ndarray  # int64 ride id per segment
    rides: dict[int, tuple[RideSpan, ...]]  # updated ride memory of each kit in the batch


def segment_starts(
    kit_ids: np.ndarray, boot_ids: np.ndarray, ts_ms: np.ndarray, gap_s: float
) -> np.ndarray:
    """Where a new kit, a new boot or a gap longer than ``gap_s`` begins a segment."""
    n = len(ts_ms)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    cut = np.empty(n, dtype=bool)
    cut[0] = True
    cut[1:] = (
        (kit_ids[1:] != kit_ids[:-1])
        | (boot_ids[1:] != boot_ids[:-1])
        | (np.diff(ts_ms) > gap_s * 1000)
    )
    return np.flatnonzero(cut)


def assign_rides(
    kit_ids: np.ndarray,
    boot_ids: np.ndarray,
    ts_ms: np.ndarray,
    states: Mapping[int, KitState],
    config: RideConfig,
) -> RideAssignment:
    """Ride ids for readings sorted by (kit, time), and each kit's updated ride memory."""
    starts = segment_starts(kit_ids, boot_ids, ts_ms, config.gap_s)
    if len(starts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return RideAssignment(empty, starts, empty, {})
    ends = np.append(starts[1:], len(ts_ms)) - 1
    gap_ms = config.gap_s * 1000
    memory: dict[int, list[RideSpan]] = {}
    seg_rides = np.empty(len(starts), dtype=np.int64)
    seg_kits = kit_ids[starts].tolist()
    seg_boots = boot_ids[starts].tolist()
    seg_first = ts_ms[starts].tolist()
    seg_last = ts_ms[ends].tolist()
    for i, (kit, boot, first, last) in enumerate(
        zip(seg_kits, seg_boots, seg_first, seg_last, strict=True)
    ):
        spans = memory.get(kit)
        if spans is None:
            state = states.get(kit)
            spans = memory[kit] = list(state.rides) if state is not None else []
        match = None
        for j, span in enumerate(spans):
            near = first <= span.end_ms + gap_ms and last >= span.start_ms - gap_ms
            earlier = match is None or span.start_ms < spans[match].start_ms
            if span.boot_id == boot and near and earlier:
                match = j
        if match is None:
            ride = RideSpan(ride_id_for(kit, boot, first), boot, first, last)
            spans.append(ride)
        else:
            old = spans[match]
            ride = RideSpan(old.ride_id, boot, min(old.start_ms, first), max(old.end_ms, last))
            spans[match] = ride
        seg_rides[i] = ride.ride_id
    rides = {kit: _bounded(spans, config) for kit, spans in memory.items()}
    ride_ids = np.repeat(seg_rides, ends - starts + 1)
    return RideAssignment(ride_ids, starts, seg_rides, rides)


def _bounded(spans: list[RideSpan], config: RideConfig) -> tuple[RideSpan, ...]:
    """The rides worth remembering: the newest few within the memory period, oldest first."""
    spans = sorted(spans, key=lambda s: (s.end_ms, s.start_ms))
    horizon = spans[-1].end_ms - config.memory_s * 1000
    kept = [s for s in spans if s.end_ms >= horizon]
    return tuple(kept[-config.max_remembered :])
