"""Fleet health for operators: storage's rows as the response, rejects grouped by kit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from api.models import Fleet, KitHealth, RejectCount
from storage.fleet import fleet


async def read_fleet(conn: psycopg.AsyncConnection[Any], since: datetime) -> Fleet:
    """Every registered kit with what it sent since ``since``, and the rejects that named
    no registered kit, by reason."""
    rows, rejects, accepted = await fleet(conn, since)
    by_kit: dict[int | None, list[RejectCount]] = {}
    for kit_id, reason, count in rejects:
        by_kit.setdefault(kit_id, []).append(RejectCount(reason=reason, count=int(count)))
    known = set()
    out = []
    for kit_id, pseudonym, status, last_seen, battery, firmware in rows:
        known.add(kit_id)
        frames, readings = accepted.get(int(kit_id), (0, 0))
        out.append(
            KitHealth(
                kit_id=kit_id,
                pseudonym=pseudonym,
                status=status,
                last_seen_at=last_seen,
                battery_pct=battery,
                firmware_version=firmware,
                frames_accepted=frames,
                readings_stored=readings,
                rejected=by_kit.get(kit_id, []),
            )
        )
    unknown: dict[str, int] = {}
    for kit_id, counts in by_kit.items():
        if kit_id not in known:
            for c in counts:
                unknown[c.reason] = unknown.get(c.reason, 0) + c.count
    return Fleet(
        since=since,
        kits=out,
        rejected_unknown_kit=[RejectCount(reason=r, count=n) for r, n in sorted(unknown.items())],
    )
