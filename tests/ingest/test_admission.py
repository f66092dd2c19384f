"""admit(): a batch of messages gives what admitting each message alone gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocol import empty_readings, encode_readings
from ingest.admission import Admitted, admit
from ingest.keys import KitKey
from ingest.mqtt import InboundMessage
from ingest.topics import TopicLayout
from ingest.validation import AdmissionRules, IngestReject

NOW_MS = 1_790_000_000_000
LAYOUT = TopicLayout()
KEYS = {kit: KitKey(kit, bytes([kit]) * 32, True) for kit in (1, 2, 3)}
RULES = AdmissionRules()

#: What a frame's readings are: all fine, some with a time or place ingest drops, all bad.
KINDS = ("good", "some_bad", "all_bad", "corrupt", "unknown_kit")


def message(kind: str, kit: int, seq: int, n: int, received_ms: int) -> InboundMessage:
    r = empty_readings(n)
    r["ts_ms"] = received_ms - 60_000 + np.arange(n) * 1000
    r["lat_deg"] = 52.13
    r["lon_deg"] = 4.66
    r["pm25_ugm3"] = 7.5
    if kind == "some_bad":
        r["ts_ms"][n // 2] = received_ms + 3_600_000  # an hour ahead
        r["ts_ms"][0] = received_ms - 40 * 86_400_000  # forty days old
    elif kind == "all_bad":
        r["lat_deg"] = 0.0
        r["lon_deg"] = 0.0
    sender = 9 if kind == "unknown_kit" else kit
    key = bytes([sender % 256]) * 32
    payload = encode_readings(sender, 1, seq, r, key)
    if kind == "corrupt":
        payload = payload[:20] + bytes([payload[20] ^ 0xFF]) + payload[21:]
    return InboundMessage(
        topic=f"{LAYOUT.root}/kits/{sender}/up",
        payload=payload,
        mid=seq,
        qos=1,
        received_ms=received_ms,
        generation=0,
    )


def alone(messages: list[InboundMessage]) -> Admitted:
    """The reference: each message admitted on its own, the results put together."""
    parts = [admit([m], LAYOUT, KEYS.get, RULES) for m in messages]
    out = Admitted(
        np.concatenate([p.readings for p in parts]), np.concatenate([p.received_ms for p in parts])
    )
    for p in parts:
        out.rejects += p.rejects
        out.statuses += p.statuses
        out.frames_accepted.update(p.frames_accepted)
    return out


def assert_same(got: Admitted, want: Admitted) -> None:
    assert got.readings.tobytes() == want.readings.tobytes()
    assert got.received_ms.tolist() == want.received_ms.tolist()
    # Refusals by sender (topic, unknown kit) are recorded before those by content.
    assert sorted(got.rejects, key=repr) == sorted(want.rejects, key=repr)
    assert got.frames_accepted == want.frames_accepted


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.sampled_from((1, 2, 3)),
            st.integers(1, 12),
            st.integers(0, 5_000),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_batch_is_admitted_as_its_messages_one_by_one(
    frames: list[tuple[str, int, int, int]],
) -> None:
    messages = [
        message(kind, kit, seq, n, NOW_MS + delay)
        for seq, (kind, kit, n, delay) in enumerate(frames)
    ]
    assert_same(admit(messages, LAYOUT, KEYS.get, RULES), alone(messages))


def test_dropped_readings_are_recorded_per_frame_and_the_rest_kept() -> None:
    messages = [
        message("corrupt", 1, 0, 4, NOW_MS),
        message("some_bad", 2, 1, 6, NOW_MS + 7),
        message("good", 3, 2, 3, NOW_MS + 9),
        message("all_bad", 1, 3, 2, NOW_MS),
        message("corrupt", 2, 4, 5, NOW_MS),
    ]  # a refused frame last, and first
    got = admit(messages, LAYOUT, KEYS.get, RULES)
    # Frame 1 keeps 4 of 6 (index 0 forty days old, index 3 an hour ahead); frame 2 all 3.
    assert len(got.readings) == 7
    assert got.received_ms.tolist() == [NOW_MS + 7] * 4 + [NOW_MS + 9] * 3
    assert got.readings["kit_id"].tolist() == [2] * 4 + [3] * 3
    assert [r.reason for r in got.rejects] == [
        "bad_checksum",
        f"partial:{IngestReject.FAR_FUTURE}",
        IngestReject.NULL_ISLAND,
        "bad_checksum",
    ]
    assert "kept 4 of 6 readings" in got.rejects[1].detail
    assert got.frames_accepted == {2: 1, 3: 1}
    assert_same(got, alone(messages))
