"""Valid frame or RemoteProtocolError, nothing else: random and mutated bytes.

Every decoder result is also checked for consistency: the fast path and the
object API refuse the same bytes for the same reason at the same offset, and
whatever decodes re-encodes to exactly the same bytes (one encoding per frame).
"""

from __future__ import annotations

import hmac
import struct
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_protocol import (
    MAX_FRAME_BYTES,
    DecodedReadings,
    FrameHeader,
    ReadingsFrame,
    RejectReason,
    RemoteProtocolError,
    UnknownFrame,
    decode_frame,
    decode_readings,
    encode_frame,
    encode_readings,
    peek_header,
)
from tests.firmware_protocol.protocol_vectors import load_vectors
from tests.firmware_protocol.strategies import frames

KEY = bytes(range(32))
EXAMPLE = next(v.frame for v in load_vectors("readings") if v.name == "worked_example")
RIDE = next(v.frame for v in load_vectors("readings") if v.name == "ride_64")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[str, int | None] | ReadingsFrame | UnknownFrame


def reseal(body: bytes | bytearray, key: bytes = KEY) -> bytes:
    """Recompute CRC and MAC over mutated bytes, so the checks behind them get exercised."""
    head = bytes(body)
    crc = head + struct.pack("<I", zlib.crc32(head))
    return crc + hmac.digest(key, crc, "sha256")[:16]


def _attempt(
    decode: Callable[..., object], data: bytes, key: bytes | Callable[[int], bytes | None]
) -> object:
    try:
        return decode(data, key)
    except RemoteProtocolError as exc:
        return exc


def check(data: bytes, key: bytes | Callable[[int], bytes | None] = KEY) -> Outcome:
    """Decode with every entry point; insist they agree and raise nothing unexpected."""
    obj = _attempt(decode_frame, data, key)
    fast = _attempt(decode_readings, data, key)
    if isinstance(obj, RemoteProtocolError):
        assert isinstance(obj.reason, RejectReason)
        assert obj.offset is None or 0 <= obj.offset <= len(data)
        assert isinstance(fast, RemoteProtocolError)
        assert (fast.reason, fast.offset) == (obj.reason, obj.offset)
        return (obj.reason.value, obj.offset)
    header = peek_header(data)
    if isinstance(obj, UnknownFrame):
        assert obj.header == header
        assert isinstance(fast, RemoteProtocolError)
        assert fast.reason is RejectReason.UNKNOWN_MESSAGE_TYPE
        return obj
    assert isinstance(obj, ReadingsFrame)
    assert isinstance(fast, DecodedReadings)
    assert fast.header == header
    if not callable(key):
        assert encode_frame(obj, key) == data
        assert encode_readings(obj.kit_id, obj.boot_id, obj.seq, fast.readings, key) == data
    return obj


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    outcome = check(data)
    assert isinstance(outcome, tuple)  # 2^-128 for a forged MAC


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_prefix(tail: bytes) -> None:
    check(b"BS\x01\x01" + tail)
    check(EXAMPLE[:20] + tail)


@SETTINGS
@given(
    message_type=st.integers(0, 255),
    count=st.one_of(st.integers(0, 3), st.integers(0, 0xFFFF)),
    frame_len_delta=st.one_of(st.just(0), st.integers(-50, 50)),
    body=st.binary(max_size=8 + 38 * 4),
    header_ids=st.tuples(
        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
    ),
)
def test_random_authentic_frames(
    message_type: int,
    count: int,
    frame_len_delta: int,
    body: bytes,
    header_ids: tuple[int, int, int],
) -> None:
    """Random headers and bodies with a correct CRC and MAC reach the value checks."""
    frame_len = max(0, min(0xFFFF, 20 + len(body) + 20 + frame_len_delta))
    head = struct.pack("<2sBBHHIII", b"BS", 1, message_type, frame_len, count, *header_ids)
    check(reseal(head + body))


@SETTINGS
@given(st.data())
def test_resealed_mutations_of_a_valid_frame(data: st.DataObject) -> None:
    frame = bytearray(RIDE[:-20])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    check(reseal(frame))


@settings(SETTINGS, max_examples=150)
@given(frames(max_readings=4), st.data())
def test_mutations_of_random_frames(frame: ReadingsFrame, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(frame, KEY))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= 1 << data.draw(st.integers(0, 7))
    outcome = check(bytes(raw))
    assert isinstance(outcome, tuple)
    # A single bit flip is always caught by the envelope: CRC-32 detects every one.
    assert outcome[0] in {
        "bad_magic",
        "unsupported_version",
        "bad_length",
        "truncated",
        "bad_checksum",
        "bad_mac",
    }


def test_every_truncation() -> None:
    for n in range(len(RIDE)):
        assert check(RIDE[:n])[0] in {"truncated", "bad_length"}  # type: ignore[index]


def test_every_bit_flip() -> None:
    for at in range(len(EXAMPLE)):
        for bit in range(8):
            data = bytearray(EXAMPLE)
            data[at] ^= 1 << bit
            outcome = check(bytes(data))
            assert isinstance(outcome, tuple), (at, bit)


def test_every_resealed_bit_flip() -> None:
    """CRC and MAC made valid again: what is left must be caught or decode cleanly."""
    reasons: set[str] = set()
    for at in range(len(EXAMPLE) - 20):
        for bit in range(8):
            data = bytearray(EXAMPLE[:-20])
            data[at] ^= 1 << bit
            outcome = check(reseal(data))
            if isinstance(outcome, tuple):
                reasons.add(outcome[0])
    assert reasons == {
        "bad_magic",
        "unsupported_version",
        "bad_length",
        "truncated",
        "too_many_readings",
        "bad_value",
    }


def test_every_frame_length_field() -> None:
    for frame_len in range(0x10000):
        data = bytearray(EXAMPLE)
        struct.pack_into("<H", data, 4, frame_len)
        outcome = check(bytes(data))
        if frame_len == len(EXAMPLE):
            assert isinstance(outcome, ReadingsFrame)
        elif frame_len > MAX_FRAME_BYTES or frame_len < 40:
            assert outcome == ("bad_length", 4)
        elif frame_len > len(EXAMPLE):
            assert outcome == ("truncated", len(EXAMPLE))
        else:
            assert outcome == ("bad_length", frame_len)  # the rest is trailing bytes


def test_huge_counts() -> None:
    for count in (0, 3, 1024, 1025, 0x7FFF, 0xFFFF):
        data = bytearray(EXAMPLE[:-20])
        struct.pack_into("<H", data, 6, count)
        expected = {0: ("bad_value", 6), 3: ("bad_length", 4), 1024: ("bad_length", 4)}.get(
            count, ("too_many_readings", 6)
        )
        assert check(reseal(data)) == expected


def test_wrong_key() -> None:
    assert check(EXAMPLE, bytes(32)) == ("bad_mac", len(EXAMPLE) - 16)


def test_mac_covers_every_byte() -> None:
    """Flip any byte, fix only the CRC: the MAC catches it."""
    for at in range(len(EXAMPLE) - 20):
        data = bytearray(EXAMPLE[:-20])
        data[at] ^= 0xFF
        with_crc = bytes(data) + struct.pack("<I", zlib.crc32(bytes(data)))
        outcome = check(with_crc + EXAMPLE[-16:])
        assert isinstance(outcome, tuple)
        if at >= 6:  # past the magic, version, type and length: only the MAC can tell
            assert outcome == ("bad_mac", len(EXAMPLE) - 16), at


def test_key_lookup() -> None:
    asked: list[int] = []

    def keys(kit_id: int) -> bytes | None:
        asked.append(kit_id)
        return KEY if kit_id == 4711 else None

    assert isinstance(check(EXAMPLE, keys), ReadingsFrame)
    assert asked[0] == 4711
    other = bytearray(EXAMPLE[:-20])
    struct.pack_into("<I", other, 8, 4712)
    with pytest.raises(RemoteProtocolError) as info:
        decode_readings(reseal(other), keys)
    assert (info.value.reason, info.value.offset, info.value.kit_id) == ("unknown_kit", 8, 4712)
    assert "4712" in str(info.value)


def test_key_lookup_is_not_asked_about_corrupt_frames() -> None:
    asked: list[int] = []

    def keys(kit_id: int) -> bytes | None:
        asked.append(kit_id)
        return KEY

    corrupt = bytearray(EXAMPLE)
    corrupt[40] ^= 1
    assert check(bytes(corrupt), keys) == ("bad_checksum", len(EXAMPLE) - 20)
    assert asked == []


def test_peek_header_reads_without_authenticating() -> None:
    forged = EXAMPLE[:-1] + bytes([EXAMPLE[-1] ^ 1])
    assert peek_header(forged) == FrameHeader(1, 1, 124, 2, 4711, 3, 17)
    assert check(forged) == ("bad_mac", len(EXAMPLE) - 16)


@pytest.mark.parametrize(
    "data",
    [bytearray(EXAMPLE), memoryview(EXAMPLE), memoryview(b"\0" + EXAMPLE)[1:]],
    ids=["bytearray", "memoryview", "odd-address"],
)
def test_other_buffers(data: bytearray | memoryview) -> None:
    assert decode_frame(data, KEY) == decode_frame(EXAMPLE, KEY)  # type: ignore[arg-type]
    fast = decode_readings(data, KEY)  # type: ignore[arg-type]
    assert fast.readings.tobytes() == decode_readings(EXAMPLE, KEY).readings.tobytes()
