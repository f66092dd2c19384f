"""A flood of bad frames mixed into good traffic: every good reading stored, every bad frame kept.

Good frames from registered kits are interleaved with thousands of bad ones:
random bytes, truncated good frames, frames with a flipped byte (CRC), frames
signed with the wrong key (forged), frames from unregistered kits, frames whose
topic names another kit, and payloads larger than any frame. Each kind is built
so that exactly one reason applies (docs/protocol.md, the order of the checks).
The real `bikesense ingest` process must store exactly the good readings and put
exactly one rejected_frames row, with that kind's reason, for each bad frame.

Memory is not measured here: the whole flood is about 20 MB, so no bound on
ingest's size could tell keeping it from not. test_oversized.py sends 300 MiB of
oversized payloads against a 200 MiB bound instead.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import psycopg
import pytest

from firmware_protocol.wire import OFFSET_RECORDS, TRAILER_BYTES
from ingest.limits import MAX_PAYLOAD_BYTES
from simulators.publisher import MqttPublisher
from tests.faults.fault_support import (
    PER_FRAME,
    assert_exact,
    good_frames,
    register_fleet,
    stored,
)
from tests.runtime_harness import ingest_process, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

KITS = (31, 32, 33)
UNREGISTERED_KIT = 39
#: The reason each kind of bad frame must be stored under.
REASONS = {
    "garbage": "bad_magic",
    "truncated": "truncated",
    "flipped": "bad_checksum",
    "forged": "bad_mac",
    "unknown_kit": "unknown_kit",
    "topic": "topic_mismatch",
    "oversized": "too_large",
}


def bad_frames(
    secrets: dict[int, bytes], good: list[tuple[int, bytes]], n: int
) -> list[tuple[int, bytes, str]]:
    """(topic kit, payload, kind) for ``n`` bad frames of seven kinds."""
    rng = np.random.default_rng(5)
    forger = bytes(32)
    wrong = good_frames(dict.fromkeys(secrets, forger), 30)
    stranger = good_frames({UNREGISTERED_KIT: forger}, 30)
    out: list[tuple[int, bytes, str]] = []
    for i in range(n):
        kit, frame = good[int(rng.integers(len(good)))]
        kind = tuple(REASONS)[i % len(REASONS)]
        if kind == "garbage":
            # Anything not starting with "BS" (a first byte other than "B").
            payload = bytes([int(rng.integers(0x43, 0x100))]) + rng.bytes(
                int(rng.integers(0, 2000))
            )
        elif kind == "truncated":
            payload = frame[: int(rng.integers(1, len(frame)))]
        elif kind == "flipped":
            # A byte of the readings: the header stays readable, the CRC fails.
            at = int(rng.integers(OFFSET_RECORDS, len(frame) - TRAILER_BYTES))
            payload = frame[:at] + bytes([frame[at] ^ 0x5A]) + frame[at + 1 :]
        elif kind == "oversized":
            # Over the protocol's largest frame, under the broker's packet limit.
            payload = frame + rng.bytes(MAX_PAYLOAD_BYTES + int(rng.integers(1, 500)) - len(frame))
        elif kind == "forged":
            kit, payload = wrong[i % len(wrong)]
        elif kind == "unknown_kit":
            kit, payload = stranger[i % len(stranger)]
        else:
            kit = next(k for k in secrets if k != kit)
            payload = frame
        out.append((kit, payload, kind))
    return out


def test_garbage_flood_keeps_every_good_reading_and_every_bad_frame(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    master, secrets = register_fleet(url, KITS)
    good = good_frames(secrets, 200)  # 600 frames, 6,000 readings
    bad = bad_frames(secrets, good, 3000)
    # Interleave: five bad frames after each good one.
    traffic: list[tuple[int, bytes]] = []
    bad_iter = iter(bad)
    for kit, payload in good:
        traffic.append((kit, payload))
        traffic.extend((k, p) for k, p, _ in (next(bad_iter) for _ in range(5)))
    root = f"{unique_topic_prefix}/bikesense/v1"
    with ingest_process(url, mqtt_url, master, root, f"{unique_topic_prefix}-ingest") as proc:
        with MqttPublisher(mqtt_url, topic_root=root, max_inflight=500) as publisher:
            for kit, payload in traffic:
                publisher.publish(f"{root}/kits/{kit}/up", payload)
        wait_for(
            lambda: (
                stored(url) == len(good) * PER_FRAME
                and scalar(url, "SELECT count(*) FROM rejected_frames") == len(bad)
            ),
            timeout_s=40,
            what=f"every frame handled (stored {stored(url)})",
        )
        assert proc.poll() is None, "ingest died in the flood"
    assert_exact(url, len(good) * PER_FRAME)
    with psycopg.connect(url, autocommit=True) as conn:
        reasons: dict[str, int] = dict(
            conn.execute("SELECT reason, count(*) FROM rejected_frames GROUP BY reason").fetchall()
        )
        no_reason = conn.execute(
            "SELECT count(*) FROM rejected_frames"
            " WHERE reason = '' OR detail IS NULL OR detail = ''"
        ).fetchone()
    assert no_reason == (0,)
    # Each kind of bad frame under its own reason, every one of them.
    assert reasons == dict(Counter(REASONS[kind] for _, _, kind in bad))
