"""A flood of bad frames mixed into good traffic: every good reading stored, every bad frame kept.

Good frames from registered kits are interleaved with thousands of bad ones:
random bytes, truncated good frames, frames with a flipped byte (CRC), frames
signed with the wrong key (forged), frames from unregistered kits, and frames
whose topic names another kit. The real `bikesense ingest` process must store
exactly the good readings, put exactly one rejected_frames row with a reason
for each bad frame, and keep its resident memory under a stated bound while
the flood runs.
"""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest

from simulators.publisher import MqttPublisher
from tests.faults.fault_support import (
    PER_FRAME,
    assert_exact,
    good_frames,
    register_fleet,
    rss_kib,
    stored,
)
from tests.runtime_harness import ingest_process, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

KITS = (31, 32, 33)
UNREGISTERED_KIT = 39
#: Ingest peaked at 87 MiB in this test here and at 130-145 MiB in bench_e2e.py's
#: 100,000-reading runs; its hand-over queue is bounded (4,000 messages). 256 MiB
#: means the flood did not pile up anywhere unbounded.
RSS_BOUND_KIB = 256 * 1024


def bad_frames(secrets: dict[int, bytes], good: list[tuple[int, bytes]],
               n: int) -> list[tuple[int, bytes, str]]:
    """(topic kit, payload, kind) for ``n`` bad frames of six kinds."""
    rng = np.random.default_rng(5)
    forger = bytes(32)
    wrong = good_frames(dict.fromkeys(secrets, forger), 30)
    stranger = good_frames({UNREGISTERED_KIT: forger}, 30)
    out: list[tuple[int, bytes, str]] = []
    for i in range(n):
        kit, frame = good[int(rng.integers(len(good)))]
        kind = ("garbage", "truncated", "flipped", "forged", "unknown_kit", "topic")[i % 6]
        if kind == "garbage":
            payload = rng.bytes(int(rng.integers(1, 2000)))
        elif kind == "truncated":
            payload = frame[:int(rng.integers(1, len(frame)))]
        elif kind == "flipped":
            at = int(rng.integers(len(frame)))
            payload = frame[:at] + bytes([frame[at] ^ 0x5A]) + frame[at + 1:]
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
    migrated_database_url: str, mqtt_url: str, unique_topic_prefix: str,
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
        peak = [rss_kib(proc.pid)]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], rss_kib(proc.pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with MqttPublisher(mqtt_url, topic_root=root, max_inflight=500) as publisher:
                for kit, payload in traffic:
                    publisher.publish(f"{root}/kits/{kit}/up", payload)
            wait_for(lambda: stored(url) == len(good) * PER_FRAME
                     and scalar(url, "SELECT count(*) FROM rejected_frames") == len(bad),
                     timeout_s=40, what=f"every frame handled (stored {stored(url)})")
        finally:
            done.set()
            watcher.join()
        assert proc.poll() is None, "ingest died in the flood"
    assert_exact(url, len(good) * PER_FRAME)
    with psycopg.connect(url, autocommit=True) as conn:
        reasons: dict[str, int] = dict(conn.execute(
            "SELECT reason, count(*) FROM rejected_frames GROUP BY reason").fetchall())
        no_reason = conn.execute("SELECT count(*) FROM rejected_frames"
                                 " WHERE reason = '' OR detail IS NULL OR detail = ''").fetchone()
    assert sum(reasons.values()) == len(bad)
    assert no_reason == (0,)
    # Each kind of bad frame shows up under a reason that names it.
    assert reasons.get("bad_mac", 0) >= len(bad) // 6  # forged
    assert reasons.get("unknown_kit", 0) >= len(bad) // 6
    assert sum(v for k, v in reasons.items() if "topic" in k) >= len(bad) // 6
    assert peak[0] < RSS_BOUND_KIB, f"ingest grew to {peak[0] // 1024} MiB in the flood"
