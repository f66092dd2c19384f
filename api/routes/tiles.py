"""Heat-map tiles (XYZ, Web Mercator, 256 px PNG)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Header, Path, Response
from starlette.concurrency import run_in_threadpool

from api.aggregates import align, choose_window, tile_bands
from api.auth import PrincipalDep
from api.bands import MetricScale
from api.deps import (
    ApiSettingsDep,
    ConnDep,
    NowDep,
    SettingsDep,
    StateDep,
    TimeRangeDep,
)
from api.errors import BadParameterError
from api.models import ERROR_RESPONSES, MetricName
from api.privacy import allowed_windows, selection
from api.render.tile_png import (
    MAX_ZOOM,
    TileBox,
    average_edge_m,
    render_tile,
    resolution_for_zoom,
)
from storage.cell_means import cell_means
from storage.queries import BBox

router = APIRouter(prefix="/v1/tiles", tags=["tiles"], responses=ERROR_RESPONSES)

#: A range that ended this long ago is unlikely to change (late uploads are rare after a day).
SETTLED_AFTER = timedelta(days=1)


@router.get(
    "/{metric}/{z}/{x}/{y}.png",
    summary="A heat-map tile of one metric over a time range",
    description=(
        "256×256 PNG, XYZ scheme in Web Mercator. Cells are H3 hexagons at a resolution "
        "chosen from the zoom (finest configured one whose cells are ≥ 6 px wide), "
        "coloured by the band of their mean (LAeq for noise): European Air Quality Index "
        "for PM and NO2, a dB(A) scale for noise (see /v1/meta). Cells with no data, too "
        "few readings, or not public (fewer than k rides per window) are transparent. "
        "Send If-None-Match with the ETag for a 304."),
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the tile"},
               304: {"description": "not modified since the ETag given"}},
)
async def tile(
    *,
    metric: MetricName,
    z: Annotated[int, Path(ge=0, le=MAX_ZOOM, description="zoom", examples=[13])],
    x: Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, examples=[4207])],
    y: Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, examples=[2692])],
    principal: PrincipalDep, time_range: TimeRangeDep, state: StateDep, conn: ConnDep,
    settings: SettingsDep, api: ApiSettingsDep, now: NowDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    if x >= 2**z:
        raise BadParameterError(f"x must be below 2^z = {2**z} at zoom {z}", parameter="x",
                           location="path")
    if y >= 2**z:
        raise BadParameterError(f"y must be below 2^z = {2**z} at zoom {z}", parameter="y",
                           location="path")
    started = time.perf_counter()
    box = TileBox.of(z, x, y)
    resolution = resolution_for_zoom(z, (box.south + box.north) / 2, settings.h3_resolutions)
    window_s = choose_window(time_range.seconds, allowed_windows(principal, settings, api))
    start, end = align(time_range.start, time_range.end, window_s)
    sel = selection(principal, api, metric=metric.metric, resolution=resolution,
                    window_s=window_s, start=start, end=end)
    # Cells whose centre lies outside the tile can still cover its edge.
    margin_deg = 2 * average_edge_m(resolution) / 111_320
    lon_margin = margin_deg / max(np.cos(np.radians(max(abs(box.south), abs(box.north)))), 0.01)
    cells = await cell_means(conn, sel, BBox(west=max(box.west - lon_margin, -180.0),
                                              south=max(box.south - margin_deg, -90.0),
                                              east=min(box.east + lon_margin, 180.0),
                                              north=min(box.north + margin_deg, 90.0)))
    scale = state.bands.scale(metric.metric)
    bands = tile_bands(cells, metric.metric, scale, api.min_readings)
    # The ETag names what the tile is drawn from, so a revalidation that matches is
    # answered before rendering anything.
    etag = tile_etag(z, x, y, cells["cell"], bands, scale)
    settled = not time_range.open_ended and end < now - SETTLED_AFTER
    max_age = api.tile_closed_max_age_s if settled else api.tile_max_age_s
    headers = {
        "ETag": etag,
        # Keyed roles see more than the public: never let a shared cache serve theirs.
        "Cache-Control": f"{'public' if principal.role.is_public else 'private'}, "
                         f"max-age={max_age}",
        "Vary": "X-API-Key, Authorization",
        "X-Bikesense-Resolution": str(resolution),
        "X-Bikesense-Window": str(window_s),
    }
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        state.metrics.tile_render.observe(time.perf_counter() - started)
        return Response(status_code=304, headers=headers)
    png = await run_in_threadpool(render_tile, box, cells["cell"], bands, scale)
    state.metrics.tile_render.observe(time.perf_counter() - started)
    return Response(png, media_type="image/png", headers=headers)


#: Part of every tile's ETag: change it whenever render_tile draws the same input
#: differently, so that caches do not keep tiles of the old drawing.
TILE_STYLE = "1"


def tile_etag(z: int, x: int, y: int, cells: np.ndarray, bands: np.ndarray,
              scale: MetricScale) -> str:
    """A strong ETag of the tile ``render_tile`` draws from these inputs (it is a pure
    function of them): the tile, the cells and their bands in cell order, the scale."""
    order = np.argsort(cells, kind="stable")
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{TILE_STYLE}|{z}/{x}/{y}|{scale!r}|".encode())
    digest.update(np.ascontiguousarray(cells[order], dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(bands[order], dtype="<i2").tobytes())
    return f'"{digest.hexdigest()}"'
