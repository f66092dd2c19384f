"""The street graph and the rounds ridden on it."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.exceptions import SimulatorConfigError
from simulators.rounds import RoundSpec, plan_shift
from simulators.town import ROAD_ARTERIAL, TownSpec, generate_town


def test_town_is_connected_around_the_centre() -> None:
    town = generate_town(TownSpec(), np.random.default_rng(1))
    lat_min, lon_min, lat_max, lon_max = town.bbox_latlon
    assert lat_min < 52.129 < lat_max
    assert lon_min < 4.656 < lon_max
    assert lat_max - lat_min == pytest.approx(4000 / 111_200, rel=0.05)
    # Every node reachable from a depot.
    seen = {town.depot_nodes[0]}
    todo = [town.depot_nodes[0]]
    while todo:
        for v, _ in town.neighbours(todo.pop()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    assert len(seen) == len(town.nodes_xy_m)
    assert 0.1 < np.mean(town.edge_class == ROAD_ARTERIAL) < 0.5
    for depot in town.depot_nodes:
        assert any(town.edge_class[e] == ROAD_ARTERIAL for _, e in town.neighbours(depot))


def test_town_is_deterministic_and_follows_its_centre() -> None:
    a = generate_town(TownSpec(), np.random.default_rng(3))
    b = generate_town(TownSpec(), np.random.default_rng(3))
    assert np.array_equal(a.nodes_xy_m, b.nodes_xy_m)
    assert np.array_equal(a.edges, b.edges)
    elsewhere = generate_town(
        TownSpec(centre_lat_deg=48.0, centre_lon_deg=11.0), np.random.default_rng(3)
    )
    lat, lon = elsewhere.to_latlon(np.array([0.0]), np.array([0.0]))
    assert (lat[0], lon[0]) == (48.0, 11.0)
    x, y = elsewhere.to_xy(*elsewhere.to_latlon(np.array([1234.5]), np.array([-987.6])))
    assert x[0] == pytest.approx(1234.5, abs=1e-6)
    assert y[0] == pytest.approx(-987.6, abs=1e-6)


def test_bad_town_spec_names_the_option() -> None:
    with pytest.raises(SimulatorConfigError, match="block_m"):
        generate_town(TownSpec(block_m=10.0), np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_shift_is_plausible(seed: int) -> None:
    town = generate_town(TownSpec(), np.random.default_rng(seed))
    spec = RoundSpec(shift_s=2 * 3600.0)
    depot = town.depot_nodes[0]
    traj = plan_shift(town, depot, spec, np.random.default_rng(100 + seed))
    speeds = traj.segment_speed_mps()
    moving = speeds[speeds > 0]
    assert moving.min() >= spec.min_speed_mps - 1e-9
    assert moving.max() <= spec.max_speed_mps + 1e-9
    # Starts and ends at the depot, after the shift's length.
    home = town.nodes_xy_m[depot]
    assert (traj.x_m[0], traj.y_m[0]) == tuple(home)
    assert (traj.x_m[-1], traj.y_m[-1]) == tuple(home)
    assert 2 * 3600 <= traj.end_s <= 2 * 3600 + spec.start_stagger_s + 3600
    # No teleporting: sampled each second, a bike never moves faster than it can ride.
    t = np.arange(0.0, traj.end_s, 1.0)
    x, y = traj.position_at(t)
    step = np.hypot(np.diff(x), np.diff(y))
    assert step.max() <= spec.max_speed_mps + 1e-6
    # It stays in town, and stops at addresses: a postal round, not a race.
    half = town.spec.half_size_m + town.spec.jitter_m
    assert np.abs(x).max() <= half
    assert np.abs(y).max() <= half
    assert traj.stop_count > 50
    stopped = np.mean(step < 0.01)
    assert 0.2 < stopped < 0.8
    mean_speed = step.sum() / traj.end_s
    assert 1.0 < mean_speed < 4.0


def test_a_short_horizon_ends_the_round_early() -> None:
    town = generate_town(TownSpec(), np.random.default_rng(0))
    long = plan_shift(town, town.depot_nodes[1], RoundSpec(), np.random.default_rng(9))
    short = plan_shift(
        town, town.depot_nodes[1], RoundSpec(), np.random.default_rng(9), horizon_s=1200.0
    )
    assert short.end_s < long.end_s
    # The same ride until the horizon.
    t = np.arange(0.0, 1200.0, 7.0)
    assert np.allclose(np.column_stack(long.position_at(t)), np.column_stack(short.position_at(t)))
