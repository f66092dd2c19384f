"""Fleet health for operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import FleetViewerDep
from api.deps import EARLIEST, ConnDep, NowDep
from api.errors import BadParameterError
from api.fleet_health import read_fleet
from api.models import ERROR_RESPONSES, Fleet

router = APIRouter(prefix="/v1/kits", tags=["kits"], responses=ERROR_RESPONSES)


@router.get("", response_model=Fleet,
            summary="Fleet health: last seen, battery, firmware, frames accepted and rejected",
            description="For officers and admins (API key). Counts cover `since` until now.")
async def kits(
    viewer: FleetViewerDep, conn: ConnDep, now: NowDep,
    since: Annotated[datetime | None, Query(description="default: 24 h ago",
                                            examples=["2026-11-21T00:00:00Z"])] = None,
) -> Fleet:
    if since is None:
        since = now - timedelta(hours=24)
    elif since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        since = since.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadParameterError(f"not a usable instant: {exc}", parameter="since") from exc
    if not EARLIEST <= since <= now:
        raise BadParameterError(f"must lie between {EARLIEST:%Y-%m-%d} and now", parameter="since")
    return await read_fleet(conn, since)
