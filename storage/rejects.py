"""Rejected frames: kept with their reason, so that nothing bad is silently dropped.

Ingest hands over refused frames in bulk (one COPY per batch); the API shows
counters per reason. A redelivered bad frame is stored again: rejects are a
log of what arrived, not a set.

A reject keeps at most the first ``MAX_REJECT_PAYLOAD_BYTES`` of its payload: the
largest message the protocol allows (docs/protocol.md, "Limits"), so every frame a
kit may send is kept whole (and can be admitted again, say once its kit is
registered), while a payload too large to be a frame cannot fill the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg.rows import class_row

from firmware_protocol import MAX_FRAME_BYTES, MAX_STATUS_BYTES

#: The most of a refused payload that is stored (see the module docstring).
MAX_REJECT_PAYLOAD_BYTES: Final = max(MAX_FRAME_BYTES, MAX_STATUS_BYTES)


@dataclass(frozen=True, slots=True)
class Reject:
    """One refused frame. ``reason`` is a short stable code (an enum's value)."""

    payload: bytes = field(repr=False)
    reason: str
    received_ms: int
    kit_id: int | None = None
    detail: str | None = None
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class StoredReject:
    id: int
    received_at: datetime
    kit_id: int | None
    reason: str
    detail: str | None
    topic: str | None
    payload: bytes = field(repr=False)


def insert_rejects(conn: psycopg.Connection[Any], rejects: Sequence[Reject]) -> int:
    """Store refused frames with one COPY, each payload cut to its first
    ``MAX_REJECT_PAYLOAD_BYTES`` (the detail then says so); returns how many."""
    if not rejects:
        return 0
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY rejected_frames (received_at, kit_id, reason, detail, topic, payload)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["timestamptz", "int8", "text", "text", "text", "bytea"])
        for r in rejects:
            payload, detail = r.payload, r.detail
            if len(payload) > MAX_REJECT_PAYLOAD_BYTES:
                payload = payload[:MAX_REJECT_PAYLOAD_BYTES]
                detail = (f"{detail}; " if detail else "") + (
                    f"payload of {len(r.payload)} bytes, the first {len(payload)} kept"
                )
            copy.write_row(
                (
                    datetime.fromtimestamp(r.received_ms / 1000, UTC),
                    r.kit_id,
                    str(r.reason),
                    detail,
                    r.topic,
                    payload,
                )
            )
    return len(rejects)


def reject_counts(
    conn: psycopg.Connection[Any], *, since: datetime | None = None, kit_id: int | None = None
) -> dict[str, int]:
    """How many frames were refused per reason, optionally since a time or for one kit."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM rejected_frames"
        " WHERE (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)"
        "   AND (%(kit)s::bigint IS NULL OR kit_id = %(kit)s)"
        " GROUP BY reason ORDER BY reason",
        {"since": since, "kit": kit_id},
    ).fetchall()
    return {str(reason): int(n) for reason, n in rows}


def recent_rejects(
    conn: psycopg.Connection[Any],
    *,
    limit: int = 100,
    kit_id: int | None = None,
    reason: str | None = None,
) -> list[StoredReject]:
    """The latest refused frames, newest first."""
    with conn.cursor(row_factory=class_row(StoredReject)) as cur:
        return cur.execute(
            "SELECT id, received_at, kit_id, reason, detail, topic, payload FROM rejected_frames"
            " WHERE (%(kit)s::bigint IS NULL OR kit_id = %(kit)s)"
            "   AND (%(reason)s::text IS NULL OR reason = %(reason)s)"
            " ORDER BY received_at DESC, id DESC LIMIT %(limit)s",
            {"kit": kit_id, "reason": reason, "limit": limit},
        ).fetchall()


def delete_rejects_before(conn: psycopg.Connection[Any], older_than: datetime) -> int:
    """Forget refused frames received before ``older_than`` (they may hold positions)."""
    with conn.transaction():
        cur = conn.execute("DELETE FROM rejected_frames WHERE received_at < %s", (older_than,))
    return cur.rowcount
