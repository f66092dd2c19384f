"""Golden bytes: every vector in tests/vectors, both decoders, both encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_protocol import (
    READING_DTYPE,
    FrameHeader,
    GnssFix,
    Reading,
    ReadingsFrame,
    RemoteProtocolError,
    StatusBits,
    UnknownFrame,
    decode_frame,
    decode_readings,
    empty_readings,
    encode_frame,
    encode_readings,
    peek_header,
)
from tests.firmware_protocol.protocol_vectors import (
    VECTORS_DIR,
    Vector,
    build,
    load_vectors,
    render,
    spec_frame,
)

READINGS = load_vectors("readings")
UNKNOWN = load_vectors("unknown")
REJECTS = load_vectors("reject")


def _ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def _frame(v: Vector) -> ReadingsFrame:
    h = v.doc["header"]
    readings = tuple(
        Reading(**{**r, "gnss_fix": GnssFix(r["gnss_fix"]), "status": StatusBits(r["status"])})
        for r in v.doc["readings"]
    )
    return ReadingsFrame(h["kit_id"], h["boot_id"], h["seq"], readings)


def _array(v: Vector) -> np.ndarray:
    h = v.doc["header"]
    rows = v.doc["readings"]
    out = empty_readings(len(rows))
    out["kit_id"], out["boot_id"], out["seq"] = h["kit_id"], h["boot_id"], h["seq"]
    out["idx"] = np.arange(len(rows))
    for name in READING_DTYPE.names or ():
        if name in rows[0]:
            values = [r[name] for r in rows]
            if name == "satellites":
                values = [-1 if x is None else x for x in values]
            out[name] = [np.nan if x is None else x for x in values]
    return out


def test_the_set_is_complete() -> None:
    assert len(READINGS) >= 8
    assert len(UNKNOWN) >= 1
    assert len(REJECTS) >= 15
    assert {v.doc["error"]["reason"] for v in REJECTS} >= {
        "truncated",
        "bad_magic",
        "unsupported_version",
        "bad_length",
        "bad_checksum",
        "bad_mac",
        "too_many_readings",
        "bad_value",
    }


def test_files_match_their_generator() -> None:
    docs = build()
    assert sorted(docs) == sorted(p.stem for p in VECTORS_DIR.glob("*.json"))
    for name, doc in docs.items():
        assert (VECTORS_DIR / f"{name}.json").read_text() == render(doc), name


@pytest.mark.parametrize("v", READINGS, ids=_ids(READINGS))
def test_spec_encoder_gives_the_golden_bytes(v: Vector) -> None:
    h = v.doc["header"]
    frame = spec_frame(
        v.doc["wire"], kit_id=h["kit_id"], boot_id=h["boot_id"], seq=h["seq"], key=v.key
    )
    assert frame.hex() == v.doc["frame_hex"]


@pytest.mark.parametrize("v", READINGS, ids=_ids(READINGS))
def test_object_api_encodes_the_golden_bytes(v: Vector) -> None:
    assert encode_frame(_frame(v), v.key).hex() == v.doc["frame_hex"]


@pytest.mark.parametrize("v", READINGS, ids=_ids(READINGS))
def test_array_api_encodes_the_golden_bytes(v: Vector) -> None:
    h = v.doc["header"]
    array = _array(v)
    array["kit_id"] = 999  # ignored: the header carries the identity
    assert (
        encode_readings(h["kit_id"], h["boot_id"], h["seq"], array, v.key).hex()
        == v.doc["frame_hex"]
    )


@pytest.mark.parametrize("v", READINGS, ids=_ids(READINGS))
def test_object_api_decodes_the_golden_values(v: Vector) -> None:
    assert decode_frame(v.frame, v.key) == _frame(v)


@pytest.mark.parametrize("v", READINGS, ids=_ids(READINGS))
def test_array_api_decodes_the_golden_values(v: Vector) -> None:
    decoded = decode_readings(v.frame, v.key)
    assert decoded.header == FrameHeader(**v.doc["header"])
    assert decoded.readings.dtype == READING_DTYPE
    # Byte equality: NaN where absent, identical float32 rounding, identity columns.
    assert decoded.readings.tobytes() == _array(v).tobytes()


@pytest.mark.parametrize("v", READINGS + UNKNOWN, ids=_ids(READINGS + UNKNOWN))
def test_peek_header(v: Vector) -> None:
    assert peek_header(v.frame) == FrameHeader(**v.doc["header"])


@pytest.mark.parametrize("v", UNKNOWN, ids=_ids(UNKNOWN))
def test_unknown_message_type_is_an_event_for_the_object_api(v: Vector) -> None:
    decoded = decode_frame(v.frame, v.key)
    assert decoded == UnknownFrame(FrameHeader(**v.doc["header"]), bytes.fromhex(v.doc["body_hex"]))


@pytest.mark.parametrize("v", UNKNOWN, ids=_ids(UNKNOWN))
def test_unknown_message_type_is_a_reject_for_the_fast_path(v: Vector) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_readings(v.frame, v.key)
    assert (info.value.reason, info.value.offset) == ("unknown_message_type", 3)


@pytest.mark.parametrize("v", REJECTS, ids=_ids(REJECTS))
@pytest.mark.parametrize("decode", [decode_frame, decode_readings])
def test_rejects_name_reason_and_offset(v: Vector, decode: object) -> None:
    assert callable(decode)
    with pytest.raises(RemoteProtocolError) as info:
        decode(v.frame, v.key)
    expected = v.doc["error"]
    assert (str(info.value.reason), info.value.offset) == (expected["reason"], expected["offset"])
    assert expected["reason"] in str(info.value)


def test_vectors_are_plain_json() -> None:
    for path in VECTORS_DIR.glob("*.json"):
        doc = json.loads(path.read_text())
        assert {"kind", "description", "key_hex", "frame_hex"} <= set(doc), path.name
