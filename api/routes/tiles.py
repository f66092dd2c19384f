"""GET /v1/tiles: heat-map tiles (XYZ, Web Mercator, 256 px PNG) with ETags (api/heatmap.py)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from api.auth import PrincipalDep
from api.deps import (
    ConnDep,
    NowDep,
    PolicyDep,
    SettingsDep,
    StateDep,
    TimeRangeDep,
)
from api.errors import BadParameterError
from api.heatmap import read_tile
from api.models import ERROR_RESPONSES, VALUES_DOC, MetricName, Values
from api.render.tile_png import MAX_ZOOM, TileBox
from api.values import check_values

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
        "Send If-None-Match with the ETag for a 304. `values=corrected` colours the values "
        "corrected against reference stations (docs/calibration.md); the header "
        "X-Bikesense-Values says which, X-Bikesense-Corrections how many correction "
        "versions and a digest of them."
    ),
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the tile"},
        304: {"description": "not modified since the ETag given"},
    },
)
async def tile(
    *,
    metric: MetricName,
    z: Annotated[int, Path(ge=0, le=MAX_ZOOM, description="zoom", examples=[13])],
    x: Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, examples=[4207])],
    y: Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, examples=[2692])],
    principal: PrincipalDep,
    time_range: TimeRangeDep,
    state: StateDep,
    conn: ConnDep,
    settings: SettingsDep,
    policy: PolicyDep,
    now: NowDep,
    if_none_match: Annotated[str | None, Header()] = None,
    values: Annotated[Values, Query(description=VALUES_DOC)] = Values.RAW,
) -> Response:
    check_values(values, metric)
    if x >= 2**z:
        raise BadParameterError(
            f"x must be below 2^z = {2**z} at zoom {z}", parameter="x", location="path"
        )
    if y >= 2**z:
        raise BadParameterError(
            f"y must be below 2^z = {2**z} at zoom {z}", parameter="y", location="path"
        )
    started = time.perf_counter()
    tile = await read_tile(
        conn,
        TileBox.of(z, x, y),
        metric.metric,
        state.bands.scale(metric.metric),
        principal=principal,
        settings=settings,
        policy=policy,
        start=time_range.start,
        end=time_range.end,
        corrected=values.corrected,
    )
    settled = not time_range.open_ended and tile.end < now - SETTLED_AFTER
    max_age = settings.api.tile_closed_max_age_s if settled else settings.api.tile_max_age_s
    headers = {
        "ETag": tile.etag,
        # Keyed roles see more than the public: never let a shared cache serve theirs.
        "Cache-Control": f"{'public' if principal.role.is_public else 'private'}, "
        f"max-age={max_age}",
        "Vary": "X-API-Key, Authorization",
        "X-Bikesense-Resolution": str(tile.resolution),
        "X-Bikesense-Window": str(tile.window_s),
        "X-Bikesense-Values": values.value,
    }
    if tile.corrected:
        # The versions behind the tile, as a count and a digest: a header, not a list.
        digest = hashlib.blake2b(",".join(tile.versions).encode(), digest_size=8).hexdigest()
        headers["X-Bikesense-Corrections"] = f"{len(tile.versions)};{digest}"
    if if_none_match is not None and tile.etag in {t.strip() for t in if_none_match.split(",")}:
        state.metrics.tile_render.observe(time.perf_counter() - started)
        return Response(status_code=304, headers=headers)
    png = await run_in_threadpool(tile.png)
    state.metrics.tile_render.observe(time.perf_counter() - started)
    return Response(png, media_type="image/png", headers=headers)
