"""The map page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAPLIBRE_DIST = WEB_DIR / "node_modules" / "maplibre-gl" / "dist"

router = APIRouter(tags=["map"])


@router.get(
    "/",
    summary="The map page",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the page"}},
)
async def index() -> FileResponse:
    return FileResponse(
        WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/app.js", include_in_schema=False)
async def app_js() -> FileResponse:
    return FileResponse(
        WEB_DIR / "app.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )


@router.get("/style.css", include_in_schema=False)
async def style_css() -> FileResponse:
    return FileResponse(
        WEB_DIR / "style.css", media_type="text/css", headers={"Cache-Control": "no-cache"}
    )
