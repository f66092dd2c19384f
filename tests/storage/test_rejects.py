"""Rejected frames are stored in bulk and counted per reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from storage.rejects import (
    MAX_REJECT_PAYLOAD_BYTES,
    Reject,
    delete_rejects_before,
    insert_rejects,
    recent_rejects,
    reject_counts,
)

pytestmark = pytest.mark.postgres


class Reason(StrEnum):
    BAD_MAC = "bad_mac"
    TRUNCATED = "truncated"


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def test_rejects_round_trip_and_count(conn: psycopg.Connection[Any]) -> None:
    t = 1_795_334_400_000
    rejects = [
        Reject(
            b"\x00\xff" * 10,
            Reason.BAD_MAC,
            t,
            kit_id=7,
            detail="MAC mismatch",
            topic="bikesense/v1/kits/7/up",
        )
    ] * 3
    rejects.append(Reject(b"", Reason.TRUNCATED, t + 1000, detail="0 bytes, need 16"))
    assert insert_rejects(conn, rejects) == 4
    assert insert_rejects(conn, []) == 0
    assert reject_counts(conn) == {"bad_mac": 3, "truncated": 1}
    assert reject_counts(conn, kit_id=7) == {"bad_mac": 3}
    assert reject_counts(conn, since=datetime.fromtimestamp((t + 500) / 1000, UTC)) == {
        "truncated": 1
    }
    latest = recent_rejects(conn, limit=2)
    assert [r.reason for r in latest] == ["truncated", "bad_mac"]
    assert latest[0].kit_id is None
    assert latest[1].payload == b"\x00\xff" * 10
    assert latest[1].topic == "bikesense/v1/kits/7/up"
    assert recent_rejects(conn, reason="bad_mac", limit=10)[0].detail == "MAC mismatch"
    assert delete_rejects_before(conn, datetime.fromtimestamp((t + 500) / 1000, UTC)) == 3
    assert reject_counts(conn) == {"truncated": 1}


def test_a_reject_keeps_at_most_the_largest_frame_of_its_payload(
    conn: psycopg.Connection[Any],
) -> None:
    t = 1_795_334_400_000
    whole = bytes(range(256)) * 16  # 4 KiB: as large as frames get, kept whole
    huge = b"\xab" * (4 * 1024 * 1024)
    insert_rejects(
        conn,
        [
            Reject(whole, Reason.BAD_MAC, t, detail="MAC mismatch"),
            Reject(huge, Reason.TRUNCATED, t + 1, detail="too much"),
            Reject(huge, Reason.TRUNCATED, t + 2),
        ],
    )
    stored = conn.execute(
        "SELECT payload, detail FROM rejected_frames ORDER BY received_at"
    ).fetchall()
    assert stored[0] == (whole, "MAC mismatch")
    kept = f"payload of {len(huge)} bytes, the first {MAX_REJECT_PAYLOAD_BYTES} kept"
    assert stored[1] == (huge[:MAX_REJECT_PAYLOAD_BYTES], f"too much; {kept}")
    assert stored[2] == (huge[:MAX_REJECT_PAYLOAD_BYTES], kept)
    assert MAX_REJECT_PAYLOAD_BYTES == 38_960  # docs/protocol.md: the largest frame
