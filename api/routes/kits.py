"""Fleet health for operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import EARLIEST, ConnDep, NowDep, PrincipalDep
from api.errors import BadParameterError, ForbiddenError, UnauthorizedError
from api.models import ERROR_RESPONSES, Fleet, KitHealth, RejectCount
from storage.fleet import fleet

router = APIRouter(prefix="/v1/kits", tags=["kits"], responses=ERROR_RESPONSES)


@router.get("", response_model=Fleet,
            summary="Fleet health: last seen, battery, firmware, frames accepted and rejected",
            description="For officers and admins (API key). Counts cover `since` until now.")
async def kits(
    principal: PrincipalDep, conn: ConnDep, now: NowDep,
    since: Annotated[datetime | None, Query(description="default: 24 h ago",
                                            examples=["2026-11-21T00:00:00Z"])] = None,
) -> Fleet:
    if principal.role.is_public:
        raise UnauthorizedError("fleet health needs an API key of an officer or admin",
                           parameter="X-API-Key", location="header")
    if not principal.role.may_see_fleet:
        raise ForbiddenError(f"the {principal.role.value} role may not see fleet health",
                        parameter="X-API-Key", location="header")
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
    rows, rejects, accepted = await fleet(conn, since)
    by_kit: dict[int | None, list[RejectCount]] = {}
    for kit_id, reason, count in rejects:
        by_kit.setdefault(kit_id, []).append(RejectCount(reason=reason, count=int(count)))
    known = set()
    out = []
    for kit_id, pseudonym, status, last_seen, battery, firmware in rows:
        known.add(kit_id)
        frames, readings = accepted.get(int(kit_id), (0, 0))
        out.append(KitHealth(kit_id=kit_id, pseudonym=pseudonym, status=status,
                             last_seen_at=last_seen, battery_pct=battery,
                             firmware_version=firmware, frames_accepted=frames,
                             readings_stored=readings, rejected=by_kit.get(kit_id, [])))
    unknown: dict[str, int] = {}
    for kit_id, counts in by_kit.items():
        if kit_id not in known:
            for c in counts:
                unknown[c.reason] = unknown.get(c.reason, 0) + c.count
    return Fleet(since=since, kits=out, rejected_unknown_kit=[
        RejectCount(reason=r, count=n) for r, n in sorted(unknown.items())])
