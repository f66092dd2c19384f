"""Delivery rounds: where each bike is, second by second, during its shift.

A shift starts at a depot, rides to a delivery district, works through the
district's streets stopping at addresses every few tens of metres, moves on to
further districts while the shift lasts, and rides back to the depot. Between
stops a bike rides at a steady speed of its own (3–6 m/s, about 11–22 km/h:
a loaded electric-assist postal bike in town); at arterial crossings it may wait
for traffic lights.

A :class:`Trajectory` is piecewise linear in time: knots (t, x, y) with a
constant speed between consecutive knots, and a stop being two knots at the
same place.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from simulators.exceptions import SimulatorConfigError
from simulators.town import ROAD_ARTERIAL, Town


@dataclass(frozen=True, slots=True)
class RoundSpec:
    """How bikes ride. Speeds in m/s, times in seconds, distances in metres."""

    min_speed_mps: float = 3.0
    max_speed_mps: float = 6.0
    shift_s: float = 5 * 3600.0  # riding part of a postal round; the kit is on for all of it
    start_stagger_s: float = 120.0  # bikes leave the depot within this long of the start
    district_radius_m: float = 450.0
    stop_spacing_m: tuple[float, float] = (25.0, 70.0)  # between address stops in a district
    stop_dwell_s: tuple[float, float] = (5.0, 40.0)
    light_wait_probability: float = 0.4  # at an arterial crossing
    light_wait_s: tuple[float, float] = (5.0, 40.0)

    def validate(self) -> None:
        if not 0.5 <= self.min_speed_mps <= self.max_speed_mps <= 15.0:
            raise SimulatorConfigError(
                f"bike speeds must satisfy 0.5 ≤ min ≤ max ≤ 15 m/s "
                f"(got {self.min_speed_mps}–{self.max_speed_mps})"
            )
        if self.shift_s <= 0:
            raise SimulatorConfigError(f"shift_s must be positive (got {self.shift_s})")
        if self.start_stagger_s < 0:
            raise SimulatorConfigError(f"start_stagger_s must be ≥ 0 (got {self.start_stagger_s})")
        if self.district_radius_m < 100:
            raise SimulatorConfigError(
                f"district_radius_m must be ≥ 100 (got {self.district_radius_m})"
            )
        for name in ("stop_spacing_m", "stop_dwell_s", "light_wait_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise SimulatorConfigError(
                    f"{name} must be a range 0 < low ≤ high (got {low}, {high})"
                )


@dataclass(frozen=True, slots=True, eq=False)
class Trajectory:
    """Knots of a piecewise-linear ride: seconds since the simulation start, local metres."""

    t_s: np.ndarray  # strictly increasing
    x_m: np.ndarray
    y_m: np.ndarray
    stop_count: int

    @property
    def start_s(self) -> float:
        return float(self.t_s[0])

    @property
    def end_s(self) -> float:
        return float(self.t_s[-1])

    def segment_speed_mps(self) -> np.ndarray:
        """Speed between consecutive knots (0 during stops)."""
        return np.asarray(np.hypot(np.diff(self.x_m), np.diff(self.y_m)) / np.diff(self.t_s))

    def position_at(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the bike is at each time (clamped to the ends of the shift)."""
        return np.interp(t_s, self.t_s, self.x_m), np.interp(t_s, self.t_s, self.y_m)

    def speed_at(self, t_s: np.ndarray) -> np.ndarray:
        speeds = self.segment_speed_mps()
        i = np.searchsorted(self.t_s, t_s, side="right") - 1
        inside = (i >= 0) & (i < len(speeds))
        out = np.zeros(np.shape(t_s), dtype=np.float64)
        out[inside] = speeds[i[inside]]
        return out

    def heading_deg_at(self, t_s: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.t_s, t_s, side="right") - 1, 0, len(self.t_s) - 2)
        dx = self.x_m[i + 1] - self.x_m[i]
        dy = self.y_m[i + 1] - self.y_m[i]
        return np.asarray(np.degrees(np.arctan2(dx, dy)) % 360.0)


class _Builder:
    """Accumulates knots, keeping times strictly increasing."""

    def __init__(self, t_s: float, x: float, y: float) -> None:
        self.t = [t_s]
        self.x = [x]
        self.y = [y]
        self.stops = 0

    @property
    def now_s(self) -> float:
        return self.t[-1]

    def ride_to(self, x: float, y: float, speed_mps: float) -> None:
        dist = math.hypot(x - self.x[-1], y - self.y[-1])
        if dist < 1e-6:
            return
        self.t.append(self.t[-1] + dist / speed_mps)
        self.x.append(x)
        self.y.append(y)

    def wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.t.append(self.t[-1] + seconds)
        self.x.append(self.x[-1])
        self.y.append(self.y[-1])
        self.stops += 1

    def build(self) -> Trajectory:
        return Trajectory(np.array(self.t), np.array(self.x), np.array(self.y), self.stops)


def plan_shift(
    town: Town,
    depot_node: int,
    spec: RoundSpec,
    rng: np.random.Generator,
    *,
    start_s: float = 0.0,
    horizon_s: float = math.inf,
) -> Trajectory:
    """One bike's shift: depot → districts → depot, deterministic given ``rng``.

    Planning stops at ``horizon_s`` (the end of the simulation) when that comes
    before the end of the shift: the ride home is all that follows.
    """
    spec.validate()
    xy = town.nodes_xy_m
    # A rider's own cruising speed sits in the middle half of the range; single
    # streets vary around it, clipped to the range.
    span = spec.max_speed_mps - spec.min_speed_mps
    base_speed = rng.uniform(spec.min_speed_mps + span / 4, spec.max_speed_mps - span / 4)
    leave_s = start_s + rng.uniform(0.0, spec.start_stagger_s)
    b = _Builder(start_s, float(xy[depot_node, 0]), float(xy[depot_node, 1]))
    b.wait(leave_s - start_s)
    shift_end_s = min(leave_s + spec.shift_s, max(horizon_s, leave_s))
    here = depot_node
    half = town.spec.half_size_m

    def edge_speed() -> float:
        return float(
            np.clip(base_speed * rng.normal(1.0, 0.08), spec.min_speed_mps, spec.max_speed_mps)
        )

    def ride_path(path: list[int], *, delivering: bool) -> None:
        for a, c in itertools.pairwise(path):
            speed = edge_speed()
            x0, y0 = xy[a]
            x1, y1 = xy[c]
            length = math.hypot(x1 - x0, y1 - y0)
            if delivering:
                done = rng.uniform(*spec.stop_spacing_m)
                while done < length:
                    f = done / length
                    b.ride_to(float(x0 + f * (x1 - x0)), float(y0 + f * (y1 - y0)), speed)
                    b.wait(rng.uniform(*spec.stop_dwell_s))
                    done += rng.uniform(*spec.stop_spacing_m)
            b.ride_to(float(x1), float(y1), speed)
            arterial_here = any(town.edge_class[e] == ROAD_ARTERIAL for _, e in town.neighbours(c))
            if arterial_here and rng.random() < spec.light_wait_probability:
                b.wait(rng.uniform(*spec.light_wait_s))

    while b.now_s < shift_end_s:
        centre = rng.uniform(-0.8 * half, 0.8 * half, size=2)
        near = np.flatnonzero(np.hypot(*(xy - centre).T) <= spec.district_radius_m)
        if len(near) < 2:
            continue
        # Work the district in nearest-neighbour order, starting nearest to where we are.
        todo = np.zeros(len(xy), dtype=bool)
        todo[near] = True
        while todo.any() and b.now_s < shift_end_s:
            left = np.flatnonzero(todo)
            # Nearest first; argmin takes the lowest node id among equals.
            nxt = int(left[np.argmin(np.hypot(*(xy[left] - xy[here]).T))])
            todo[nxt] = False
            path = town.shortest_path(here, nxt)
            in_district = np.hypot(*(xy[path] - centre).T) <= spec.district_radius_m * 1.2
            # Ride to the district without stopping, deliver once inside it.
            cut = int(np.argmax(in_district)) if in_district.any() else len(path) - 1
            ride_path(path[: cut + 1], delivering=False)
            ride_path(path[cut:], delivering=True)
            todo[path] = False
            here = nxt
    ride_path(town.shortest_path(here, depot_node), delivering=False)
    return b.build()
