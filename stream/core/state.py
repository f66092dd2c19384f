"""What the core remembers per kit between batches: plain frozen values, easy to store.

The embedded runtime keeps a dict of these in memory; the distributed runtime
keeps them in a table keyed by kit, which is why the stream of a kit is
partitioned by kit. Losing the state is safe: the next batch starts a kit afresh
(a ride may then be split in two, and a stuck sensor is noticed a little later).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RideSpan:
    """A ride seen recently: late readings within the ride gap of it join it."""

    ride_id: int
    boot_id: int
    start_ms: int  # earliest reading seen in the ride
    end_ms: int  # latest reading seen in the ride


@dataclass(frozen=True, slots=True)
class Position:
    lat_deg: float
    lon_deg: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class SensorRun:
    """The current run of exactly repeated values of one sensor (stuck-sensor check)."""

    values: tuple[float, ...]
    start_ms: int  # time of the first reading of the run
    count: int  # readings in the run so far


@dataclass(frozen=True, slots=True)
class QaMemory:
    """Where a kit's QA context stands after its newest reading."""

    ride_id: int  # ride of the newest reading; context carries over only within it
    boot_id: int
    last_ts_ms: int  # time of the newest reading
    boot_start_ms: int | None = None  # first reading of frame 0 of this boot, when seen
    anchor: Position | None = None  # last position that passed the jump filter
    rejecting_since_ms: int | None = None  # first rejected position of a run of jumps
    pm_run: SensorRun | None = None
    no2_run: SensorRun | None = None
    noise_run: SensorRun | None = None


@dataclass(frozen=True, slots=True)
class KitState:
    """Everything the core remembers about one kit."""

    kit_id: int
    rides: tuple[RideSpan, ...] = ()  # recent rides, oldest first, bounded by RideConfig
    qa: QaMemory | None = None


#: Kit states by kit id. The core never mutates one; it returns new ones.
KitStates = Mapping[int, KitState]
