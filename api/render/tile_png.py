"""Heat-map tiles: XYZ tile maths, the H3 resolution for a zoom, and the PNG renderer.

Pure functions (no I/O): :func:`tile_cells` lists the H3 cells that can touch a
tile, :func:`render_tile` draws the cells it is given, coloured by band, into a
256×256 palette PNG whose index 0 is fully transparent (no data, too little
data, or not public). Hexagons are drawn as polygons in pixel space with
Pillow; neighbouring cells share their edges, so a covered area has no seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO

import h3
import h3.api.basic_int as h3i
import mercantile
import numpy as np
from PIL import Image, ImageDraw

from api.bands import MetricScale

TILE_SIZE = 256
MAX_ZOOM = 22
#: Metres per pixel at the equator at zoom 0 for 256-px Web Mercator tiles (EPSG:3857).
EQUATOR_M_PER_PX_Z0 = 2 * math.pi * 6_378_137 / TILE_SIZE
#: A hexagon is drawn only at resolutions where its edge spans at least this many
#: pixels: finer cells would be specks, and a tile would hold thousands of them.
MIN_EDGE_PX = 6.0
#: Web Mercator stops at ±85.0511°.
MERCATOR_MAX_LAT = 85.0511287798066


@dataclass(frozen=True, slots=True)
class TileBox:
    """A tile with its WGS84 bounds."""

    z: int
    x: int
    y: int
    west: float
    south: float
    east: float
    north: float

    @classmethod
    def of(cls, z: int, x: int, y: int) -> TileBox:
        b = mercantile.bounds(x, y, z)
        return cls(z=z, x=x, y=y, west=b.west, south=b.south, east=b.east, north=b.north)


def tile_in_range(z: int, x: int, y: int) -> bool:
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z


def average_edge_m(resolution: int) -> float:
    return float(h3.average_hexagon_edge_length(resolution, unit="m"))


def resolution_for_zoom(z: int, lat_deg: float, resolutions: tuple[int, ...]) -> int:
    """The finest configured resolution whose cells are at least MIN_EDGE_PX wide at ``z``."""
    m_per_px = EQUATOR_M_PER_PX_Z0 * math.cos(math.radians(lat_deg)) / 2**z
    for res in sorted(resolutions, reverse=True):
        if average_edge_m(res) / m_per_px >= MIN_EDGE_PX:
            return res
    return min(resolutions)


def bbox_cells(
    west: float, south: float, east: float, north: float, resolution: int, *, margin_m: float = 0.0
) -> list[int]:
    """H3 cells whose centre lies in the box grown by ``margin_m`` on each side."""
    mid_lat = (south + north) / 2
    dlat = margin_m / 111_320
    dlon = margin_m / (111_320 * max(math.cos(math.radians(mid_lat)), 1e-6))
    s = max(south - dlat, -MERCATOR_MAX_LAT)
    n = min(north + dlat, MERCATOR_MAX_LAT)
    w = max(west - dlon, -180.0)
    e = min(east + dlon, 180.0)
    poly = h3.LatLngPoly([(s, w), (s, e), (n, e), (n, w)])
    return list(h3i.h3shape_to_cells(poly, resolution))


def tile_cells(tile: TileBox, resolution: int) -> list[int]:
    """Every cell that can cover a pixel of ``tile``: centres inside, plus a margin of one cell."""
    return bbox_cells(
        tile.west,
        tile.south,
        tile.east,
        tile.north,
        resolution,
        margin_m=2 * average_edge_m(resolution),
    )


@lru_cache(maxsize=262_144)
def _boundary(cell: int) -> tuple[tuple[float, float], ...]:
    # Geometry never changes, so it is cached; what a cell's value is never is.
    return tuple(h3i.cell_to_boundary(cell))


def _project(lat: np.ndarray, lon: np.ndarray, tile: TileBox) -> tuple[np.ndarray, np.ndarray]:
    world = TILE_SIZE * 2**tile.z
    px = (lon + 180.0) / 360.0 * world - tile.x * TILE_SIZE
    lat_r = np.radians(np.clip(lat, -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT))
    merc = np.log(np.tan(np.pi / 4 + lat_r / 2))
    py = (1 - merc / np.pi) / 2 * world - tile.y * TILE_SIZE
    return px, py


def render_tile(
    tile: TileBox, cells: np.ndarray, band_idx: np.ndarray, scale: MetricScale
) -> bytes:
    """A PNG of ``cells`` coloured by ``band_idx`` (NO_BAND cells stay transparent)."""
    image = Image.new("P", (TILE_SIZE, TILE_SIZE), 0)
    keep = band_idx >= 0
    cells, band_idx = cells[keep], band_idx[keep]
    if len(cells):
        rings = [_boundary(int(c)) for c in cells]
        sizes = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
        flat = np.array([p for ring in rings for p in ring], dtype=np.float64)
        px, py = _project(flat[:, 0], flat[:, 1], tile)
        xy = np.column_stack((px, py)).round(2).tolist()
        draw = ImageDraw.Draw(image)
        start = 0
        for size, band in zip(sizes.tolist(), band_idx.tolist(), strict=True):
            ring = xy[start : start + size]
            start += size
            draw.polygon([tuple(p) for p in ring], fill=band + 1)
    return _encode(image, scale)


def empty_tile_png() -> bytes:
    """A fully transparent tile (the same bytes every time, so its ETag is stable)."""
    return _EMPTY


def _encode(image: Image.Image, scale: MetricScale) -> bytes:
    palette = np.zeros((256, 3), dtype=np.uint8)
    alpha = np.zeros(256, dtype=np.uint8)
    n = len(scale.bands)
    palette[1 : n + 1] = scale.rgba[:n, :3]
    alpha[1 : n + 1] = scale.rgba[:n, 3]
    image.putpalette(palette.tobytes()[: (n + 1) * 3])
    out = BytesIO()
    image.save(
        out, format="PNG", transparency=alpha[: n + 1].tobytes(), optimize=False, compress_level=6
    )
    return out.getvalue()


def _empty_png() -> bytes:
    image = Image.new("P", (TILE_SIZE, TILE_SIZE), 0)
    image.putpalette(bytes(3))
    out = BytesIO()
    image.save(out, format="PNG", transparency=bytes(1))
    return out.getvalue()


_EMPTY = _empty_png()
