"""Fleet health for operators (``/v1/kits``), read on an async connection.

``storage.kits`` and ``storage.rejects`` are synchronous; the API reads with
``psycopg.AsyncConnection``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

FleetRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[int, tuple[int, int]]]


async def fleet(conn: psycopg.AsyncConnection[Any], since: datetime) -> FleetRows:
    """Kits, rejected frames by (kit, reason) since ``since``, and (frames, readings) per kit
    stored since ``since``."""
    cur = await conn.execute(
        "SELECT kit_id, pseudonym, status, last_seen_at, battery_pct, firmware_version "
        "FROM kits ORDER BY kit_id"
    )
    kits = await cur.fetchall()
    cur = await conn.execute(
        "SELECT kit_id, reason, count(*) FROM rejected_frames WHERE received_at >= %s "
        "GROUP BY kit_id, reason ORDER BY kit_id, reason",
        (since,),
    )
    rejects = await cur.fetchall()
    # received_at has no index; ts (indexed, the partition key) bounds the scan: a kit
    # uploads at most a few days of backlog, so a week before `since` is enough.
    cur = await conn.execute(
        "SELECT kit_id, count(DISTINCT (boot_id, seq)), count(*) FROM readings "
        "WHERE received_at >= %s AND ts >= %s - interval '7 days' GROUP BY kit_id",
        (since, since),
    )
    accepted = {int(k): (int(f), int(n)) for k, f, n in await cur.fetchall()}
    return kits, rejects, accepted
