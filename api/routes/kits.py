"""Fleet health for operators."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import FleetViewerDep
from api.deps import ConnDep, NowDep
from api.fleet_health import read_fleet
from api.models import ERROR_RESPONSES, Fleet
from api.params import parse_since

router = APIRouter(prefix="/v1/kits", tags=["kits"], responses=ERROR_RESPONSES)


@router.get(
    "",
    response_model=Fleet,
    summary="Fleet health: last seen, battery, firmware, frames accepted and rejected",
    description="For officers and admins (API key). Counts cover `since` until now.",
)
async def kits(
    viewer: FleetViewerDep,
    conn: ConnDep,
    now: NowDep,
    since: Annotated[
        datetime | None, Query(description="default: 24 h ago", examples=["2026-11-21T00:00:00Z"])
    ] = None,
) -> Fleet:
    since = parse_since(since, now) if since is not None else now - timedelta(hours=24)
    return await read_fleet(conn, since)
