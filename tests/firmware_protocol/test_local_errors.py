"""Misuse raises LocalProtocolError with a message that says what and where."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from firmware_protocol import (
    MAX_READINGS_PER_FRAME,
    LocalProtocolError,
    ProtocolError,
    Reading,
    ReadingsFrame,
    RejectReason,
    RemoteProtocolError,
    decode_readings,
    empty_readings,
    encode_frame,
    encode_readings,
)

KEY = bytes(32)


def _one(**values: object) -> np.ndarray:
    readings = empty_readings(3)
    readings["ts_ms"] = 1_700_000_000_000
    for name, value in values.items():
        readings[name][2] = value
    return readings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lat_deg": 90.00000006}, "reading 2: lat_deg"),
        ({"lat_deg": 52.0}, "reading 2: lat_deg and lon_deg must be both NaN or neither"),
        ({"pm25_ugm3": -0.06}, "reading 2: pm25_ugm3"),
        ({"pm25_ugm3": 6553.45}, "reading 2: pm25_ugm3=6553.45"),
        ({"pm25_ugm3": np.inf}, "pm25_ugm3=inf"),
        ({"humidity_pct": 100.06}, "humidity_pct"),
        ({"temperature_c": -327.68}, "temperature_c"),
        ({"gnss_fix": 3}, "gnss_fix=3"),
        ({"satellites": -2}, "satellites=-2"),
        ({"interval_ms": 70_000}, "interval_ms=70000"),
        ({"ts_ms": -1}, "ts_ms=-1"),
        ({"ts_ms": 2**53}, "ts_ms"),
        ({"ts_ms": 1_700_000_000_000 + 2**32}, "span"),
    ],
)
def test_array_values_out_of_range(values: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message.replace("(", r"\(")):
        encode_readings(1, 2, 3, _one(**values), KEY)


def test_values_round_to_the_edge_of_the_range() -> None:
    readings = _one(
        pm25_ugm3=6553.44, humidity_pct=100.04, lat_deg=90.00000004, lon_deg=-180.00000004
    )
    decoded = decode_readings(encode_readings(1, 2, 3, readings, KEY), KEY).readings
    assert decoded["lat_deg"][2] == 90.0
    assert decoded["lon_deg"][2] == -180.0
    assert decoded["humidity_pct"][2] == np.float32(100.0)


@pytest.mark.parametrize(
    ("n", "message"), [(0, "at least one"), (MAX_READINGS_PER_FRAME + 1, "at most 1024")]
)
def test_batch_size(n: int, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode_readings(1, 2, 3, empty_readings(n), KEY)
    with pytest.raises(LocalProtocolError, match=message):
        encode_frame(ReadingsFrame(1, 2, 3, (Reading(ts_ms=0),) * n), KEY)


@pytest.mark.parametrize("ids", [(-1, 0, 0), (0, 2**32, 0), (0, 0, 2**32)])
def test_identity_out_of_range(ids: tuple[int, int, int]) -> None:
    with pytest.raises(LocalProtocolError, match="unsigned 32-bit"):
        encode_readings(*ids, empty_readings(1), KEY)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "00" * 32])
def test_keys_are_32_raw_bytes(key: object) -> None:
    with pytest.raises(LocalProtocolError, match="32 raw bytes"):
        encode_readings(1, 2, 3, empty_readings(1), key)  # type: ignore[arg-type]
    frame = encode_readings(1, 2, 3, empty_readings(1), KEY)
    with pytest.raises(LocalProtocolError, match="32 raw bytes"):
        decode_readings(frame, lambda _kit: key)  # type: ignore[arg-type,return-value]


def test_not_a_readings_array() -> None:
    with pytest.raises(LocalProtocolError, match="READING_DTYPE"):
        encode_readings(1, 2, 3, np.zeros(3), KEY)
    with pytest.raises(LocalProtocolError, match="lack the columns"):
        encode_readings(1, 2, 3, np.zeros(3, dtype=[("ts_ms", "<i8")]), KEY)


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (Reading(ts_ms=0, pm25_ugm3=float("nan")), "use None for no value"),
        (Reading(ts_ms=0, pm25_ugm3=True), "not a number"),  # bool is an int to mypy, not to us
        (Reading(ts_ms=0, lat_deg=1.0), "both None or neither"),
        (Reading(ts_ms=0, satellites=128), "satellites=128"),
        (Reading(ts_ms=1.5), "ts_ms=1.5"),  # type: ignore[arg-type]
        (Reading(ts_ms=0, status=1 << 16), "status"),  # type: ignore[arg-type]
    ],
)
def test_object_values(reading: Reading, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode_frame(ReadingsFrame(1, 2, 3, (reading,)), KEY)


def test_error_tree() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    exc = RemoteProtocolError(RejectReason.BAD_MAC, 108, "no", kit_id=7)
    assert str(exc) == "bad_mac at byte 108 (kit 7): no"
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.offset, copy.kit_id, str(copy)) == (
        exc.reason,
        exc.offset,
        exc.kit_id,
        str(exc),
    )
