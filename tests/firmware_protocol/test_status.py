"""The JSON status / heartbeat message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocol import (
    MAX_STATUS_BYTES,
    RejectReason,
    RemoteProtocolError,
    StatusBits,
    StatusMessage,
    decode_status,
    encode_status,
)
from tests.firmware_protocol.strategies import status_messages

EXAMPLE = StatusMessage(
    battery_pct=87.5,
    battery_v=3.91,
    firmware_version="1.4.2",
    uptime_s=86_400,
    queue_depth=12,
    ts_ms=1_767_225_600_000,
    kit_id=4711,
    boot_id=3,
    status=StatusBits.LOW_BATTERY,
)


def test_example_bytes() -> None:
    assert encode_status(EXAMPLE) == (
        b'{"v":1,"kit_id":4711,"boot_id":3,"ts_ms":1767225600000,"battery_pct":87.5,'
        b'"battery_v":3.91,"firmware_version":"1.4.2","uptime_s":86400,"queue_depth":12,'
        b'"status":32}'
    )


@settings(max_examples=200, deadline=None)
@given(status_messages)
def test_round_trip(msg: StatusMessage) -> None:
    data = encode_status(msg)
    assert len(data) <= MAX_STATUS_BYTES
    assert decode_status(data) == msg


def test_minimal_message_and_unknown_members() -> None:
    doc = {
        "v": 1,
        "kit_id": 5,
        "ts_ms": 0,
        "firmware_version": "x",
        "uptime_s": 0,
        "queue_depth": 0,
        "added_in_a_later_firmware": [1, 2],
    }
    assert decode_status(json.dumps(doc).encode()) == StatusMessage(
        battery_pct=None,
        battery_v=None,
        firmware_version="x",
        uptime_s=0,
        queue_depth=0,
        ts_ms=0,
        kit_id=5,
    )


def _doc(**changes: object) -> bytes:
    doc = json.loads(encode_status(EXAMPLE))
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"", "bad_json", 0),
        (b"{", "bad_json", 1),
        (b'{"v":1,}', "bad_json", 7),
        (b"\xff{}", "bad_json", 0),
        (b"[1, 2]", "bad_json", 0),
        (b'{"v": NaN}', "bad_json", None),
        (b'{"v": 1, "v": 1}', "bad_json", None),
        (b" " * (MAX_STATUS_BYTES + 1), "bad_length", MAX_STATUS_BYTES),
        (_doc(v=2), "unsupported_version", 1),
        (_doc(v=...), "unsupported_version", None),
        (_doc(kit_id=...), "bad_value", None),
        (_doc(kit_id=-1), "bad_value", None),
        (_doc(kit_id=2**32), "bad_value", None),
        (_doc(kit_id=True), "bad_value", None),
        (_doc(kit_id="4711"), "bad_value", None),
        (_doc(battery_pct=100.5), "bad_value", None),
        (_doc(battery_v="3.9"), "bad_value", None),
        (_doc(uptime_s=1.5), "bad_value", None),
        (_doc(queue_depth=...), "bad_value", None),
        (_doc(firmware_version=""), "bad_value", None),
        (_doc(firmware_version="x" * 33), "bad_value", None),
        (_doc(firmware_version="1.0\n"), "bad_value", None),
        (_doc(status=0x10000), "bad_value", None),
        (_doc(ts_ms=2**53), "bad_value", None),
    ],
)
def test_refusals(data: bytes, reason: str, offset: int | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_status(data)
    assert info.value.reason == reason
    if offset is not None:
        assert info.value.offset == offset


def test_field_errors_point_at_the_member() -> None:
    data = _doc(battery_pct=-1)
    with pytest.raises(RemoteProtocolError) as info:
        decode_status(data)
    assert info.value.offset == data.index(b'"battery_pct"')
    assert "battery_pct" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda x: json.dumps(x).encode()),
    )
)
def test_status_or_protocol_error(data: bytes) -> None:
    try:
        msg = decode_status(data)
    except RemoteProtocolError as exc:
        error: RemoteProtocolError | None = exc
    else:
        error = None
        assert decode_status(encode_status(msg)) == msg
    assert error is None or isinstance(error.reason, RejectReason)
