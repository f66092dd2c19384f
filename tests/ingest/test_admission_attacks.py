"""Admission against a kit that lies (issue 21), tried as that kit's owner would.

The holder of one kit's credentials sends frames and statuses that name another kit,
or readings that carry a position while saying they have no fix. Nothing of that
reaches another kit's record, fleet health's verdict on the kit whose topic was used,
or a stored position.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest

from firmware_protocol import StatusMessage, empty_readings, encode_readings, encode_status
from ingest.admission import admit
from ingest.keys import KitKey
from ingest.mqtt import InboundMessage
from ingest.topics import TopicLayout
from ingest.validation import AdmissionRules, IngestReject
from storage.fleet import fleet
from storage.rejects import Reject, insert_rejects

NOW_MS = 1_790_000_000_000
LAYOUT = TopicLayout()
KEYS = {kit: KitKey(kit, bytes([kit]) * 32, True) for kit in (1, 2)}
RULES = AdmissionRules()
VICTIM, ATTACKER = 1, 2


def _readings(n: int = 4) -> np.ndarray:
    r = empty_readings(n)
    r["ts_ms"] = NOW_MS - 60_000 + np.arange(n) * 1000
    r["lat_deg"] = 52.13
    r["lon_deg"] = 4.66
    r["gnss_fix"] = 2
    r["pm25_ugm3"] = 7.5
    return r


def _on(topic_kit: int, kind: str, payload: bytes) -> InboundMessage:
    return InboundMessage(
        topic=f"{LAYOUT.root}/kits/{topic_kit}/{kind}",
        payload=payload,
        mid=1,
        qos=1,
        received_ms=NOW_MS,
        generation=0,
    )


def _status(kit_id: int, battery_pct: float) -> bytes:
    return encode_status(
        StatusMessage(
            battery_pct=battery_pct,
            battery_v=3.1,
            firmware_version="EVIL-0.0",
            uptime_s=10,
            queue_depth=0,
            ts_ms=NOW_MS,
            kit_id=kit_id,
            boot_id=1,
        )
    )


def test_a_frame_on_another_kit_s_topic_is_filed_under_its_sender() -> None:
    frame = encode_readings(ATTACKER, 1, 0, _readings(), KEYS[ATTACKER].key)
    got = admit([_on(VICTIM, "up", frame)], LAYOUT, KEYS.get, RULES)
    assert len(got.readings) == 0
    (reject,) = got.rejects
    assert reject.reason == IngestReject.TOPIC_MISMATCH
    assert reject.kit_id == ATTACKER  # the claimed sender ...
    assert f"/kits/{VICTIM}/" in reject.topic  # ... and the topic it used
    assert not got.frames_accepted


def test_a_frame_claiming_another_kit_without_its_key_is_filed_under_the_topic_s_kit() -> None:
    """On a broker with accounts only a kit publishes on its own topic; a frame there that
    names another kit but is not sealed with that kit's key was sent by the topic's kit,
    and the kit it names is not blamed."""
    forged = encode_readings(VICTIM, 1, 0, _readings(), KEYS[ATTACKER].key)
    got = admit([_on(ATTACKER, "up", forged)], LAYOUT, KEYS.get, RULES)
    (reject,) = got.rejects
    assert reject.reason == IngestReject.TOPIC_MISMATCH
    assert reject.kit_id == ATTACKER
    assert f"/kits/{ATTACKER}/" in reject.topic
    assert f"frame says kit {VICTIM}" in reject.detail


def test_a_status_naming_another_kit_is_refused() -> None:
    # On the victim's status topic, a status that says it is the attacker's; and on the
    # attacker's own topic, a status that says it is the victim's.
    forged = [
        _on(VICTIM, "status", _status(ATTACKER, 1.0)),
        _on(ATTACKER, "status", _status(VICTIM, 1.0)),
    ]
    got = admit(forged, LAYOUT, KEYS.get, RULES)
    assert got.statuses == []
    assert [r.reason for r in got.rejects] == [IngestReject.TOPIC_MISMATCH] * 2
    # A status has no MAC: filed under the kit whose topic (the broker's ACL) it came on.
    assert [r.kit_id for r in got.rejects] == [VICTIM, ATTACKER]
    # Its own status on its own topic still goes through.
    own = admit([_on(ATTACKER, "status", _status(ATTACKER, 80.0))], LAYOUT, KEYS.get, RULES)
    assert [s.kit_id for s in own.statuses] == [ATTACKER]


def test_a_reading_without_a_fix_keeps_no_position() -> None:
    r = _readings()
    r["gnss_fix"][1:3] = 0  # a stale position, sent anyway (docs/protocol.md §4.2)
    frame = encode_readings(ATTACKER, 1, 0, r, KEYS[ATTACKER].key)
    got = admit([_on(ATTACKER, "up", frame)], LAYOUT, KEYS.get, RULES)
    assert len(got.readings) == 4
    unfixed = got.readings["gnss_fix"] == 0
    assert unfixed.tolist() == [False, True, True, False]
    assert np.isnan(got.readings["lat_deg"][unfixed]).all()
    assert np.isnan(got.readings["lon_deg"][unfixed]).all()
    assert np.isfinite(got.readings["lat_deg"][~unfixed]).all()


@pytest.mark.postgres
def test_fleet_health_does_not_blame_the_kit_whose_topic_was_used(
    migrated_database_url: str,
) -> None:
    frames = [
        encode_readings(ATTACKER, 1, seq, _readings(), KEYS[ATTACKER].key) for seq in range(5)
    ]
    got = admit([_on(VICTIM, "up", f) for f in frames], LAYOUT, KEYS.get, RULES)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        insert_rejects(
            conn,
            [
                Reject(
                    payload=r.payload,
                    reason=r.reason,
                    received_ms=r.received_ms,
                    kit_id=r.kit_id,
                    detail=r.detail,
                    topic=r.topic,
                )
                for r in got.rejects
            ],
        )

    async def rejects_by_kit() -> list[tuple[Any, ...]]:
        conn = await psycopg.AsyncConnection.connect(migrated_database_url, autocommit=True)
        async with conn:
            _, rejects, _ = await fleet(conn, datetime(2000, 1, 1, tzinfo=UTC))
            return rejects

    assert asyncio.run(rejects_by_kit()) == [(ATTACKER, IngestReject.TOPIC_MISMATCH.value, 5)]
