"""The offline base map: a GeoJSON file of streets and place names, served as it is.

An operator points ``BIKESENSE_BASEMAP_FILE`` at a GeoJSON FeatureCollection of streets
(LineStrings with a ``name``) and places (Points with a ``name``); the map page draws it
under the heat map, so the map shows streets with no tile server and no internet. The demo
writes its generated town's streets there (``simulators/streetmap.py``). docs/map.md says
how to cut one for a real town.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import ApiSettingsDep
from api.errors import NotFoundError
from api.models import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["map"], responses=ERROR_RESPONSES)


@router.get(
    "/basemap",
    summary="The offline base map (GeoJSON streets and places)",
    description=(
        "The GeoJSON file the operator configured (`BIKESENSE_BASEMAP_FILE`), or 404 "
        "when there is none: the page then uses the raster base map "
        "(`BIKESENSE_BASEMAP_URL`) or a plain background."
    ),
    response_class=FileResponse,
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def basemap(api: ApiSettingsDep) -> FileResponse:
    path = api.basemap_file
    if path is None or not path.is_file():
        raise NotFoundError(
            "no offline base map configured (BIKESENSE_BASEMAP_FILE)",
            parameter=None,
            location="server",
        )
    # Revalidated each time (the ETag makes that a 304): the demo rewrites it on start.
    return FileResponse(
        path, media_type="application/geo+json", headers={"Cache-Control": "no-cache"}
    )
