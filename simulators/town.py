"""A small street graph around a town centre: streets, arterial roads, depots.

The graph is generated, not shipped: a jittered grid of streets with some
blocks merged (edges removed while the graph stays connected), every few rows
and columns promoted to arterial roads, and a ring of depots. It is a stand-in
with the properties that matter to the pipeline (bikes stay on streets, busy
roads are where pollution and noise are), not a map of a real town.

Positions inside the simulator are local metres east (x) and north (y) of the
centre; :meth:`Town.to_latlon` turns them into WGS84 degrees with an
equirectangular projection, which is exact to well under a metre over a few
kilometres.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from simulators.exceptions import SimulatorConfigError

#: Alphen aan den Rijn, the town of the original pilot (town hall, roughly).
ALPHEN_LAT_DEG = 52.129
ALPHEN_LON_DEG = 4.656

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8

ROAD_RESIDENTIAL = 0
ROAD_ARTERIAL = 1


@dataclass(frozen=True, slots=True)
class TownSpec:
    """How to generate a town. Sizes in metres."""

    centre_lat_deg: float = ALPHEN_LAT_DEG
    centre_lon_deg: float = ALPHEN_LON_DEG
    half_size_m: float = 2000.0  # the town spans 2·half_size_m in each direction
    block_m: float = 150.0  # grid spacing of the streets
    jitter_m: float = 20.0  # nodes move up to this far off the grid
    removed_fraction: float = 0.12  # residential streets dropped to merge blocks
    arterial_every: int = 6  # every n-th grid row and column is an arterial road
    n_depots: int = 2

    def validate(self) -> None:
        if not -80.0 <= self.centre_lat_deg <= 80.0:
            raise SimulatorConfigError(
                f"centre_lat_deg must be within ±80° (got {self.centre_lat_deg})"
            )
        if not -180.0 <= self.centre_lon_deg <= 180.0:
            raise SimulatorConfigError(
                f"centre_lon_deg must be within ±180° (got {self.centre_lon_deg})"
            )
        if not 300.0 <= self.half_size_m <= 20_000.0:
            raise SimulatorConfigError(f"half_size_m must be 300–20000 m (got {self.half_size_m})")
        if not 50.0 <= self.block_m <= self.half_size_m:
            raise SimulatorConfigError(f"block_m must be 50 m – half_size_m (got {self.block_m})")
        if not 0.0 <= self.jitter_m < self.block_m / 3:
            raise SimulatorConfigError(f"jitter_m must be 0 – block_m/3 (got {self.jitter_m})")
        if not 0.0 <= self.removed_fraction <= 0.5:
            raise SimulatorConfigError(
                f"removed_fraction must be 0–0.5 (got {self.removed_fraction})"
            )
        if self.arterial_every < 2:
            raise SimulatorConfigError(f"arterial_every must be ≥ 2 (got {self.arterial_every})")
        if not 1 <= self.n_depots <= 16:
            raise SimulatorConfigError(f"n_depots must be 1–16 (got {self.n_depots})")


@dataclass(frozen=True, slots=True, eq=False)
class Town:
    """An undirected street graph in local metres, with arterial roads and depots."""

    spec: TownSpec
    nodes_xy_m: np.ndarray  # (n, 2) float64
    edges: np.ndarray  # (m, 2) int32 node indices, i < j
    edge_length_m: np.ndarray  # (m,) float64
    edge_class: np.ndarray  # (m,) uint8: ROAD_RESIDENTIAL or ROAD_ARTERIAL
    depot_nodes: tuple[int, ...]
    _adjacency: tuple[tuple[tuple[int, int], ...], ...] = field(repr=False)
    _lengths: tuple[float, ...] = field(repr=False)

    @property
    def depots_xy_m(self) -> np.ndarray:
        return self.nodes_xy_m[list(self.depot_nodes)]

    @property
    def depots_latlon(self) -> list[tuple[float, float]]:
        """Depot positions as (lat_deg, lon_deg); privacy zones around them are the pipeline's."""
        lat, lon = self.to_latlon(self.depots_xy_m[:, 0], self.depots_xy_m[:, 1])
        return [(float(a), float(b)) for a, b in zip(lat, lon, strict=True)]

    @property
    def bbox_latlon(self) -> tuple[float, float, float, float]:
        """(min_lat, min_lon, max_lat, max_lon) of the street network."""
        lat, lon = self.to_latlon(self.nodes_xy_m[:, 0], self.nodes_xy_m[:, 1])
        return float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())

    def neighbours(self, node: int) -> tuple[tuple[int, int], ...]:
        """(neighbour node, edge index) pairs."""
        return self._adjacency[node]

    def to_latlon(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat0 = math.radians(self.spec.centre_lat_deg)
        lat = self.spec.centre_lat_deg + np.degrees(
            np.asarray(y_m, dtype=np.float64) / EARTH_RADIUS_M
        )
        lon = self.spec.centre_lon_deg + np.degrees(
            np.asarray(x_m, dtype=np.float64) / (EARTH_RADIUS_M * math.cos(lat0))
        )
        return lat, lon

    def to_xy(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat0 = math.radians(self.spec.centre_lat_deg)
        y = (
            np.radians(np.asarray(lat_deg, dtype=np.float64) - self.spec.centre_lat_deg)
            * EARTH_RADIUS_M
        )
        x = (
            np.radians(np.asarray(lon_deg, dtype=np.float64) - self.spec.centre_lon_deg)
            * EARTH_RADIUS_M
            * math.cos(lat0)
        )
        return x, y

    def arterial_segments(self) -> np.ndarray:
        """(k, 4) array of x0, y0, x1, y1 of the arterial road segments."""
        e = self.edges[self.edge_class == ROAD_ARTERIAL]
        return np.hstack([self.nodes_xy_m[e[:, 0]], self.nodes_xy_m[e[:, 1]]])

    def shortest_path(self, source: int, target: int) -> list[int]:
        """Nodes from source to target (both included) along the shortest streets (Dijkstra)."""
        if source == target:
            return [source]
        dist = {source: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, source)]
        lengths = self._lengths
        while heap:
            d, u = heapq.heappop(heap)
            if u == target:
                break
            if d > dist[u]:
                continue
            for v, e in self._adjacency[u]:
                nd = d + lengths[e]
                if nd < dist.get(v, math.inf):
                    dist[v] = nd
                    prev[v] = u
                    heapq.heappush(heap, (nd, v))
        if target not in prev:
            raise SimulatorConfigError(f"no street path from node {source} to node {target}")
        path = [target]
        while path[-1] != source:
            path.append(prev[path[-1]])
        path.reverse()
        return path

    def edge_between(self, a: int, b: int) -> int:
        for v, e in self._adjacency[a]:
            if v == b:
                return e
        raise KeyError((a, b))


def generate_town(spec: TownSpec, rng: np.random.Generator) -> Town:
    """A connected jittered-grid street graph; deterministic given ``rng``."""
    spec.validate()
    n_side = int(2 * spec.half_size_m // spec.block_m) + 1
    coords = (np.arange(n_side) - (n_side - 1) / 2) * spec.block_m
    gx, gy = np.meshgrid(coords, coords)  # gy varies along rows
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    xy += rng.uniform(-spec.jitter_m, spec.jitter_m, size=xy.shape)

    def node(row: int, col: int) -> int:
        return row * n_side + col

    mid = (n_side - 1) // 2

    # Arterials run along rows / columns offset from the centre by a multiple of
    # arterial_every, so that one of each crosses the town centre.
    def arterial_line(i: int) -> bool:
        return (i - mid) % spec.arterial_every == 0

    edges: list[tuple[int, int]] = []
    classes: list[int] = []
    for r in range(n_side):
        for c in range(n_side):
            if c + 1 < n_side:
                edges.append((node(r, c), node(r, c + 1)))
                classes.append(ROAD_ARTERIAL if arterial_line(r) else ROAD_RESIDENTIAL)
            if r + 1 < n_side:
                edges.append((node(r, c), node(r + 1, c)))
                classes.append(ROAD_ARTERIAL if arterial_line(c) else ROAD_RESIDENTIAL)
    edge_arr = np.array(edges, dtype=np.int32)
    class_arr = np.array(classes, dtype=np.uint8)

    # Merge blocks: drop residential streets in random order, but only those
    # whose removal keeps every node reachable (checked with a union-find over
    # the kept edges, built after the candidate order is fixed).
    candidates = np.flatnonzero(class_arr == ROAD_RESIDENTIAL)
    drop = set(rng.permutation(candidates)[: int(len(candidates) * spec.removed_fraction)].tolist())
    parent = list(range(n_side * n_side))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    keep = np.ones(len(edge_arr), dtype=bool)
    for e, (a, b) in enumerate(edge_arr.tolist()):
        if e in drop:
            keep[e] = False
            continue
        parent[find(a)] = find(b)
    for e in sorted(drop):  # put back what is needed for connectivity
        a, b = (int(v) for v in edge_arr[e])
        if find(a) != find(b):
            parent[find(a)] = find(b)
            keep[e] = True
    edge_arr, class_arr = edge_arr[keep], class_arr[keep]
    length = np.hypot(*(xy[edge_arr[:, 0]] - xy[edge_arr[:, 1]]).T)

    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(len(xy))]
    for e, (a, b) in enumerate(edge_arr.tolist()):
        adjacency[a].append((b, e))
        adjacency[b].append((a, e))

    # Depots on arterial crossings, spread around the centre (sorting offices sit
    # on through roads, not in the middle of a residential block).
    crossings = [
        node(r, c)
        for r in range(n_side)
        for c in range(n_side)
        if arterial_line(r) and arterial_line(c)
    ]
    ring_m = spec.half_size_m * 0.4
    depots: list[int] = []
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(spec.n_depots):
        angle = phase + 2 * math.pi * k / spec.n_depots
        want = np.array([ring_m * math.cos(angle), ring_m * math.sin(angle)])
        options = [n for n in crossings if n not in depots] or [
            n for n in range(len(xy)) if n not in depots
        ]
        depots.append(min(options, key=lambda n: float(np.hypot(*(xy[n] - want)))))

    return Town(
        spec=spec,
        nodes_xy_m=xy,
        edges=edge_arr,
        edge_length_m=length,
        edge_class=class_arr,
        depot_nodes=tuple(depots),
        _adjacency=tuple(tuple(a) for a in adjacency),
        _lengths=tuple(length.tolist()),
    )
