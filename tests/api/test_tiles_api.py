"""GET /v1/tiles: PNG heat-map tiles with caching headers, privacy and errors."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import httpx
import mercantile
import numpy as np
import pytest
from PIL import Image

from api.bands import load_bands
from api.heatmap import tile_etag
from api.roles import Role
from stream.core.partials import Metric
from tests.api.api_factories import BUSY, QUIET, SPARSE, day_range

Z = 15


def _tile_url(metric: str, where: tuple[float, float], z: int = Z) -> str:
    t = mercantile.tile(where[1], where[0], z)
    return f"/v1/tiles/{metric}/{t.z}/{t.x}/{t.y}.png"


def _pixel(png: bytes, where: tuple[float, float], z: int = Z) -> list[int]:
    t = mercantile.tile(where[1], where[0], z)
    b = mercantile.xy_bounds(t)
    x, y = mercantile.xy(where[1], where[0])
    px = int((x - b.left) / (b.right - b.left) * 256)
    py = int((b.top - y) / (b.top - b.bottom) * 256)
    rgba = np.asarray(Image.open(BytesIO(png)).convert("RGBA"))
    return list(rgba[py, px])


def test_a_tile_is_a_png_coloured_where_the_public_may_look(client: httpx.Client) -> None:
    response = client.get(_tile_url("pm25", BUSY), params=day_range())
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert _pixel(response.content, BUSY) == [0x50, 0xCC, 0xAA, 190]  # Fair
    assert response.headers["x-bikesense-resolution"] == "10"
    assert response.headers["x-bikesense-window"] == "3600"


def test_cells_below_k_and_thin_cells_are_transparent(
    client: httpx.Client, keys: dict[Role, str]
) -> None:
    public = client.get(_tile_url("pm25", QUIET), params=day_range())
    assert _pixel(public.content, QUIET)[3] == 0  # 2 rides: not public
    officer = client.get(
        _tile_url("pm25", QUIET), params=day_range(), headers={"X-API-Key": keys[Role.OFFICER]}
    )
    assert _pixel(officer.content, QUIET) == [0xF0, 0xE6, 0x41, 190]  # Moderate
    sparse = client.get(
        _tile_url("pm25", SPARSE), params=day_range(), headers={"X-API-Key": keys[Role.OFFICER]}
    )
    assert _pixel(sparse.content, SPARSE)[3] == 0  # 9 readings: never painted as clean air


def test_switching_metric_changes_the_tile(client: httpx.Client) -> None:
    pm = client.get(_tile_url("pm25", BUSY), params=day_range())
    noise = client.get(_tile_url("noise", BUSY), params=day_range())
    assert pm.content != noise.content
    assert _pixel(noise.content, BUSY) == [0x4B, 0x1B, 0x5E, 190]  # ≥ 75 dB(A)


def test_etag_and_cache_control(client: httpx.Client, keys: dict[Role, str]) -> None:
    url = _tile_url("pm25", BUSY)
    settled = {"from": "2026-11-21T00:00:00Z", "to": "2026-11-21T12:00:00Z"}
    first = client.get(url, params=settled)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    # A range that ended two days before the API's now is settled: cacheable for longer,
    # by anyone.
    assert first.headers["cache-control"] == "public, max-age=3600"
    assert "X-API-Key" in first.headers["vary"]
    again = client.get(url, params=settled, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    open_range = client.get(url)
    assert open_range.headers["cache-control"] == "public, max-age=60"
    # Ended less than a day before the API's now (NOW, 2026-11-23 12:00): late data may come.
    recent = client.get(url, params={"from": "2026-11-22T12:00:00Z", "to": "2026-11-23T00:00:00Z"})
    assert recent.headers["cache-control"] == "public, max-age=60"
    keyed = client.get(url, params=day_range(), headers={"X-API-Key": keys[Role.OFFICER]})
    assert keyed.headers["cache-control"].startswith("private")


def test_the_etag_follows_what_the_tile_is_drawn_from() -> None:
    bands_2024 = load_bands("eaqi-2024")
    pm25, pm10 = bands_2024.scale(Metric.PM25), bands_2024.scale(Metric.PM10)
    cells = np.array([11, 12, 13], dtype=np.int64)
    bands = np.array([0, 2, 1], dtype=np.int16)
    etag = tile_etag(13, 1, 2, cells, bands, pm25)
    # The same cells in another order (the query's order is not fixed): the same tile.
    assert tile_etag(13, 1, 2, cells[::-1], bands[::-1], pm25) == etag
    # Anything that changes the drawing changes the ETag: a band, a cell, the tile, the scale.
    assert tile_etag(13, 1, 2, cells, np.array([0, 2, 2], dtype=np.int16), pm25) != etag
    assert tile_etag(13, 1, 2, cells[:2], bands[:2], pm25) != etag
    assert tile_etag(13, 1, 3, cells, bands, pm25) != etag
    assert tile_etag(13, 1, 2, cells, bands, pm10) != etag
    older = load_bands("eaqi-2021").scale(Metric.PM25)
    assert tile_etag(13, 1, 2, cells, bands, older) != etag


def test_a_tile_far_from_any_data_is_fully_transparent(client: httpx.Client) -> None:
    response = client.get("/v1/tiles/pm25/10/0/0.png", params=day_range())
    rgba = np.asarray(Image.open(BytesIO(response.content)).convert("RGBA"))
    assert (rgba[..., 3] == 0).all()


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/v1/tiles/pm25/3/8/0.png", "x"),
        ("/v1/tiles/pm25/3/0/8.png", "y"),
        ("/v1/tiles/pm25/23/0/0.png", "z"),
        ("/v1/tiles/pm25/-1/0/0.png", "z"),
        ("/v1/tiles/pm25/1/a/0.png", "x"),
        ("/v1/tiles/ozone/1/0/0.png", "metric"),
    ],
)
def test_bad_tile_addresses_are_4xx_with_the_parameter(
    client: httpx.Client, url: str, parameter: str
) -> None:
    response = client.get(url)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["parameter"] == parameter


def test_the_days_threshold_applies_to_tiles(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(public_min_days=2)  # the scenario has one day
    response = client.get(_tile_url("pm25", BUSY), params=day_range())
    assert _pixel(response.content, BUSY)[3] == 0
