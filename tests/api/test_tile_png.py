"""Tile maths and the renderer, without a database."""

from __future__ import annotations

from io import BytesIO

import h3.api.basic_int as h3i
import mercantile
import numpy as np
from PIL import Image

from api.bands import NO_BAND, load_bands
from api.render.tile_png import (
    TILE_SIZE,
    TileBox,
    empty_tile_png,
    render_tile,
    resolution_for_zoom,
    tile_cells,
    tile_in_range,
)
from stream.core.partials import Metric

LAT, LON = 52.129, 4.656
RESOLUTIONS = (7, 8, 9, 10)


def _rgba(png: bytes) -> np.ndarray:
    image = Image.open(BytesIO(png))
    assert image.size == (TILE_SIZE, TILE_SIZE)
    return np.asarray(image.convert("RGBA"))


def test_resolution_grows_with_zoom_and_stays_in_the_configured_set() -> None:
    chosen = [resolution_for_zoom(z, LAT, RESOLUTIONS) for z in range(20)]
    assert chosen == sorted(chosen)
    assert set(chosen) <= set(RESOLUTIONS)
    assert chosen[0] == 7
    assert chosen[-1] == 10
    assert resolution_for_zoom(13, LAT, RESOLUTIONS) == 10
    assert resolution_for_zoom(11, LAT, RESOLUTIONS) == 8


def test_tile_range() -> None:
    assert tile_in_range(0, 0, 0)
    assert not tile_in_range(3, 8, 0)
    assert not tile_in_range(23, 0, 0)


def test_cells_are_drawn_in_their_band_colour_and_the_rest_is_transparent() -> None:
    t = mercantile.tile(LON, LAT, 15)
    box = TileBox.of(t.z, t.x, t.y)
    cell = h3i.latlng_to_cell(LAT, LON, 10)
    scale = load_bands().scale(Metric.PM25)
    png = render_tile(box, np.array([cell]), np.array([1], dtype=np.int16), scale)
    rgba = _rgba(png)
    lng, lat = LON, LAT
    px = int(
        (mercantile.xy(lng, lat)[0] - mercantile.xy_bounds(t).left)
        / (mercantile.xy_bounds(t).right - mercantile.xy_bounds(t).left)
        * TILE_SIZE
    )
    py = int(
        (mercantile.xy_bounds(t).top - mercantile.xy(lng, lat)[1])
        / (mercantile.xy_bounds(t).top - mercantile.xy_bounds(t).bottom)
        * TILE_SIZE
    )
    assert rgba[py, px].tolist() == [0x50, 0xCC, 0xAA, 190]  # "Fair"
    assert rgba[0, 0, 3] == 0 or rgba[-1, -1, 3] == 0
    coloured = (rgba[..., 3] > 0).sum()
    assert 50 < coloured < TILE_SIZE * TILE_SIZE


def test_cells_without_a_band_stay_transparent() -> None:
    t = mercantile.tile(LON, LAT, 14)
    box = TileBox.of(t.z, t.x, t.y)
    cells = np.array(tile_cells(box, 10), dtype=np.int64)
    bands = np.full(len(cells), NO_BAND, dtype=np.int16)
    png = render_tile(box, cells, bands, load_bands().scale(Metric.NOISE))
    assert (_rgba(png)[..., 3] == 0).all()


def test_tile_cells_cover_the_whole_tile() -> None:
    t = mercantile.tile(LON, LAT, 14)
    box = TileBox.of(t.z, t.x, t.y)
    cells = np.array(tile_cells(box, 10), dtype=np.int64)
    png = render_tile(
        box, cells, np.zeros(len(cells), dtype=np.int16), load_bands().scale(Metric.PM10)
    )
    assert (_rgba(png)[..., 3] > 0).all()  # no seams, no gaps at the edges


def test_the_empty_tile_is_transparent_and_stable() -> None:
    assert empty_tile_png() == empty_tile_png()
    assert (_rgba(empty_tile_png())[..., 3] == 0).all()
