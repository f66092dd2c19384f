"""The generated town's streets as GeoJSON, with street and place names: the demo's base map.

The demo's town is generated (:mod:`simulators.town`), so no published map matches its
streets. This writes them as a GeoJSON FeatureCollection that the API serves
(``BIKESENSE_BASEMAP_FILE``) and the map page draws under the heat map, offline: one
LineString per stretch of a grid row or column, named like a Dutch street, and Point
features for a few places (the centre, the depots).

The generator lays its nodes out row by row on an ``n × n`` grid (node = row · n + col) and
keeps only edges between grid neighbours, so an edge's direction and grid line follow from its
node numbers. Names are a function of the grid line alone: the same town always gets the same
names, whatever the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from simulators.exceptions import SimulatorConfigError
from simulators.town import ROAD_ARTERIAL, Town

# Common Dutch street-name stems: trees and flowers for east–west streets, painters and
# writers for north–south ones, through roads for the arterials.
_ROW_STEMS = (
    "Linden",
    "Eiken",
    "Beuken",
    "Wilgen",
    "Populieren",
    "Kastanje",
    "Berken",
    "Esdoorn",
    "Iepen",
    "Tulpen",
    "Rozen",
    "Lelie",
    "Narcissen",
    "Krokus",
    "Dahlia",
    "Iris",
    "Anjer",
    "Jasmijn",
    "Seringen",
    "Vlier",
    "Hazelaar",
    "Meidoorn",
    "Hyacint",
    "Klaver",
    "Zonnebloem",
    "Korenbloem",
    "Madelief",
    "Vergeet-mij-niet",
    "Goudsbloem",
    "Lavendel",
)
_COL_STEMS = (
    "Rembrandt",
    "Vermeer",
    "Frans Hals",
    "Jan Steen",
    "Van Gogh",
    "Mondriaan",
    "Escher",
    "Breitner",
    "Mesdag",
    "Israëls",
    "Ruysdael",
    "Potter",
    "Hobbema",
    "Van Goyen",
    "Vondel",
    "Bredero",
    "Hooft",
    "Huygens",
    "Cats",
    "Bilderdijk",
    "Multatuli",
    "Da Costa",
    "Tollens",
    "Beets",
    "Potgieter",
    "Staring",
    "Gorter",
    "Couperus",
    "Van Eeden",
    "Heijermans",
)
_ARTERIALS = (
    "Hoofdweg",
    "Rijndijk",
    "Prins Bernhardlaan",
    "Europaweg",
    "Stationsweg",
    "Burgemeester Visserlaan",
    "Zegerslaan",
    "Kerkweg",
    "Molenweg",
    "Provincialeweg",
    "Ringweg",
    "Julianalaan",
    "Koningsweg",
    "Hogeweg",
)
_DEPOT_NAMES = (
    "Sorteercentrum Noord",
    "Sorteercentrum Zuid",
    "Sorteercentrum Oost",
    "Sorteercentrum West",
)


def _grid_side(town: Town) -> int:
    n = math.isqrt(len(town.nodes_xy_m))
    if n * n != len(town.nodes_xy_m):
        raise SimulatorConfigError(f"not a grid town: {len(town.nodes_xy_m)} nodes")
    return n


def street_name(line: int, *, row: bool, arterial: bool, arterial_index: int) -> str:
    """The name of grid row (``row``) or column ``line``."""
    if arterial:
        return _ARTERIALS[(arterial_index * 2 + (0 if row else 1)) % len(_ARTERIALS)]
    stems = _ROW_STEMS if row else _COL_STEMS
    suffixes = ("straat", "laan") if row else ("straat", "weg")
    stem = stems[line % len(stems)]
    suffix = suffixes[(line // len(stems)) % len(suffixes)]
    return f"{stem}{suffix}"


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive runs in sorted positions: [1, 2, 3, 6, 7] → [[1, 2, 3], [6, 7]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def town_streets_geojson(town: Town) -> dict[str, Any]:
    """The town's streets and places as a GeoJSON FeatureCollection (WGS84, lon/lat)."""
    n = _grid_side(town)
    lat, lon = town.to_latlon(town.nodes_xy_m[:, 0], town.nodes_xy_m[:, 1])
    coords = np.column_stack([np.round(lon, 6), np.round(lat, 6)]).tolist()
    # Per grid line: the positions along it whose edge to the next position exists.
    rows: dict[int, dict[int, bool]] = {}
    cols: dict[int, dict[int, bool]] = {}
    for (u, v), cls in zip(town.edges.tolist(), town.edge_class.tolist(), strict=True):
        a, b = min(u, v), max(u, v)
        if b == a + 1 and a // n == b // n:
            rows.setdefault(a // n, {})[a % n] = cls == ROAD_ARTERIAL
        elif b == a + n:
            cols.setdefault(a % n, {})[a // n] = cls == ROAD_ARTERIAL
    features: list[dict[str, Any]] = []
    arterial_count = 0
    for is_row, lines in ((True, rows), (False, cols)):
        for line in sorted(lines):
            segments = lines[line]
            arterial = any(segments.values())
            name = street_name(line, row=is_row, arterial=arterial, arterial_index=arterial_count)
            arterial_count += arterial
            for run in _runs(sorted(segments)):
                positions = [*run, run[-1] + 1]
                nodes = [line * n + p if is_row else p * n + line for p in positions]
                features.append(
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "LineString",
                            "coordinates": [coords[k] for k in nodes],
                        },
                        "properties": {"name": name, "class": "arterial" if arterial else "street"},
                    }
                )
    centre = [round(town.spec.centre_lon_deg, 6), round(town.spec.centre_lat_deg, 6)]
    features.append(
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": centre},
            "properties": {"name": "Centrum", "class": "place"},
        }
    )
    for k, (d_lat, d_lon) in enumerate(town.depots_latlon):
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(d_lon, 6), round(d_lat, 6)]},
                "properties": {"name": _DEPOT_NAMES[k % len(_DEPOT_NAMES)], "class": "depot"},
            }
        )
    return {"type": "FeatureCollection", "name": "bikesense simulated town", "features": features}


def write_town_streets(town: Town, path: Path) -> Path:
    """Write :func:`town_streets_geojson` to ``path`` (compact JSON) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(town_streets_geojson(town), separators=(",", ":"), ensure_ascii=False),
        encoding="utf-8",
    )
    return path
