"""decode_readings_many: frame by frame the same as decode_readings, whatever the batch holds."""

from __future__ import annotations

import hmac

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocol import (
    READING_DTYPE,
    FrameHeader,
    LocalProtocolError,
    ReadingsFrame,
    RemoteProtocolError,
    decode_readings,
    decode_readings_many,
    encode_frame,
)
from firmware_protocol.envelope import frame_mac
from firmware_protocol.wire import MAC_BYTES
from tests.firmware_protocol.protocol_vectors import KEY, OTHER_KEY, load_vectors
from tests.firmware_protocol.strategies import frames

VECTORS = load_vectors()


def _same_as_single(payloads: list[bytes], key: bytes | object) -> None:
    """Each frame's outcome in the batch equals decode_readings on that frame alone."""
    batch = decode_readings_many(payloads, key)  # type: ignore[arg-type]
    assert len(batch.starts) == len(payloads) + 1
    assert batch.starts[-1] == len(batch.readings)
    assert batch.readings.dtype == READING_DTYPE
    for i, payload in enumerate(payloads):
        result = batch.result(i)
        if isinstance(result, RemoteProtocolError):
            with pytest.raises(RemoteProtocolError) as refused:
                decode_readings(payload, key)  # type: ignore[arg-type]
            exc = refused.value
            assert (result.reason, result.offset, str(result)) == (exc.reason, exc.offset, str(exc))
            assert len(batch.frame_readings(i)) == 0
            continue
        single = decode_readings(payload, key)  # type: ignore[arg-type]
        assert result == single.header
        got = batch.frame_readings(i)
        assert got.tobytes() == single.readings.tobytes()


def test_golden_vectors_one_batch() -> None:
    """Every golden frame, good and bad, in one batch, each with its own key."""
    keys = {v.name: v.key for v in VECTORS}
    payloads = [v.frame for v in VECTORS]
    for v, payload in zip(VECTORS, payloads, strict=True):
        _same_as_single([payload], keys[v.name])
    # And all at once under the common key (most vectors use it).
    common = [v.frame for v in VECTORS if v.key == KEY]
    assert len(common) > 20
    _same_as_single(common, KEY)


def test_golden_readings_values() -> None:
    good = [v for v in VECTORS if v.kind == "readings" and v.key == KEY]
    batch = decode_readings_many([v.frame for v in good], KEY)
    for i, v in enumerate(good):
        assert isinstance(batch.result(i), FrameHeader)
        want = decode_readings(v.frame, KEY).readings
        assert batch.frame_readings(i).tobytes() == want.tobytes()


@settings(max_examples=60, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=20), st.data())
def test_equal_to_decode_readings_on_random_frames(
    batch: list[ReadingsFrame], data: st.DataObject
) -> None:
    payloads = []
    for frame in batch:
        payload = encode_frame(frame, KEY)
        spoil = data.draw(st.sampled_from(["none", "none", "flip", "cut", "key", "extra"]))
        if spoil == "flip":
            at = data.draw(st.integers(0, len(payload) - 1))
            payload = payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1 :]
        elif spoil == "cut":
            payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
        elif spoil == "key":
            payload = encode_frame(frame, OTHER_KEY)
        elif spoil == "extra":
            payload += b"\x00"
        payloads.append(payload)
    _same_as_single(payloads, KEY)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_bytes_are_refused_frame_by_frame(payloads: list[bytes]) -> None:
    batch = decode_readings_many(payloads, KEY)
    assert sorted(batch.errors) == list(range(len(payloads)))
    _same_as_single(payloads, KEY)


def test_bad_frames_do_not_spoil_the_good_ones() -> None:
    good = [v.frame for v in VECTORS if v.kind == "readings" and v.key == KEY]
    bad = [v.frame for v in VECTORS if v.kind == "reject" and v.key == KEY]
    mixed = [p for pair in zip(good, bad, strict=False) for p in pair]
    batch = decode_readings_many(mixed, KEY)
    n_good = len(mixed) - len(batch.errors)
    assert n_good == min(len(good), len(bad))
    assert len(batch.readings) == sum(len(decode_readings(p, KEY).readings) for p in good[:n_good])
    _same_as_single(mixed, KEY)


def test_key_lookup_per_kit_and_unknown_kits() -> None:
    good = [v for v in VECTORS if v.kind == "readings" and v.key == KEY]
    known = {int(v.doc["kit_id"]) for v in good[:2]} if "kit_id" in good[0].doc else set()
    calls: list[int] = []

    def lookup(kit_id: int) -> bytes | None:
        calls.append(kit_id)
        return KEY if not known or kit_id in known else None

    payloads = [v.frame for v in good] * 3
    _same_as_single(payloads, lookup)
    batch = decode_readings_many(payloads, lookup)
    assert len(batch.starts) == len(payloads) + 1


def test_empty_batch() -> None:
    batch = decode_readings_many([], KEY)
    assert batch.errors == {}
    assert len(batch.readings) == 0
    assert list(batch.starts) == [0]


def test_a_wrong_key_is_misuse() -> None:
    good = next(v for v in VECTORS if v.kind == "readings")
    with pytest.raises(LocalProtocolError):
        decode_readings_many([good.frame], b"short")


def test_many_small_frames_equal_the_single_decoder() -> None:
    rng = np.random.default_rng(3)
    good = [v for v in VECTORS if v.kind == "readings" and v.key == KEY]
    payloads = [good[int(i)].frame for i in rng.integers(len(good), size=500)]
    _same_as_single(payloads, KEY)


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=5), st.sampled_from([KEY, OTHER_KEY]))
def test_the_keyed_mac_is_hmac_sha256_however_often_it_is_used(
    messages: list[bytes], key: bytes
) -> None:
    # keyed_mac is cached per key and copied per frame: using it must never change it.
    for message in messages * 2:
        assert frame_mac(key, message) == hmac.digest(key, message, "sha256")[:MAC_BYTES]


def test_frames_of_a_rotated_key_are_refused_with_the_other() -> None:
    good = [v.frame for v in VECTORS if v.kind == "readings" and v.key == KEY]
    assert not decode_readings_many(good, KEY).errors
    refused = decode_readings_many(good, OTHER_KEY).errors
    assert len(refused) == len(good)
    assert {str(e.reason) for e in refused.values()} == {"bad_mac"}
    assert not decode_readings_many(good, KEY).errors  # and back: nothing cached wrongly
