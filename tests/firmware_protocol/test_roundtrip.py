"""Round trips over the whole value space: decode(encode(x)) == x, and both paths agree."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_protocol import (
    MAX_READINGS_PER_FRAME,
    Reading,
    ReadingsFrame,
    array_to_frame,
    decode_frame,
    decode_readings,
    empty_readings,
    encode_frame,
    encode_readings,
    frame_to_array,
    peek_header,
)
from firmware_protocol.wire import readings_frame_bytes
from tests.firmware_protocol.strategies import frames

KEY = bytes(range(32))
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(frames())
def test_object_round_trip(frame: ReadingsFrame) -> None:
    data = encode_frame(frame, KEY)
    assert len(data) == readings_frame_bytes(len(frame.readings))
    assert decode_frame(data, KEY) == frame


@SETTINGS
@given(frames())
def test_array_path_agrees_with_object_path(frame: ReadingsFrame) -> None:
    data = encode_frame(frame, KEY)
    decoded = decode_readings(data, KEY)
    header = peek_header(data)
    assert decoded.header == header
    assert (header.kit_id, header.boot_id, header.seq, header.count) == (
        frame.kit_id,
        frame.boot_id,
        frame.seq,
        len(frame.readings),
    )
    expected = frame_to_array(frame)
    assert decoded.readings.tobytes() == expected.tobytes()
    assert encode_readings(frame.kit_id, frame.boot_id, frame.seq, decoded.readings, KEY) == data
    assert array_to_frame(frame.kit_id, frame.boot_id, frame.seq, decoded.readings) == frame


@SETTINGS
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_values_are_rounded_to_the_wire_resolution(values: list[float]) -> None:
    pm = [abs(v) % 6553.4 for v in values]
    readings = empty_readings(len(pm))
    readings["ts_ms"] = 1_700_000_000_000
    readings["pm25_ugm3"] = pm
    readings["temperature_c"] = [max(-327.67, min(327.67, v)) for v in values]
    decoded = decode_readings(encode_readings(1, 2, 3, readings, KEY), KEY).readings
    # Half a step of the wire plus float32's own rounding of the stored value.
    assert np.all(np.abs(decoded["pm25_ugm3"] - readings["pm25_ugm3"]) <= 0.05 + 1e-3)
    assert np.all(np.abs(decoded["temperature_c"] - readings["temperature_c"]) <= 0.005 + 1e-4)


def test_absent_is_distinct_from_zero() -> None:
    zero = Reading(
        ts_ms=0,
        lat_deg=0.0,
        lon_deg=0.0,
        hdop=0.0,
        satellites=0,
        speed_mps=0.0,
        pm1_ugm3=0.0,
        pm25_ugm3=0.0,
        pm10_ugm3=0.0,
        no2_ugm3=0.0,
        noise_laeq_db=0.0,
        noise_lamax_db=0.0,
        temperature_c=0.0,
        humidity_pct=0.0,
    )
    absent = Reading(ts_ms=0)
    frame = ReadingsFrame(1, 1, 1, (zero, absent))
    assert decode_frame(encode_frame(frame, KEY), KEY) == frame
    rows = decode_readings(encode_frame(frame, KEY), KEY).readings
    for name in (
        "lat_deg",
        "hdop",
        "pm25_ugm3",
        "no2_ugm3",
        "noise_laeq_db",
        "temperature_c",
        "humidity_pct",
    ):
        assert rows[name][0] == 0.0, name
        assert math.isnan(rows[name][1]), name
    assert list(rows["satellites"]) == [0, -1]


def test_largest_frame_round_trips() -> None:
    readings = tuple(Reading(ts_ms=i, pm25_ugm3=i / 10) for i in range(MAX_READINGS_PER_FRAME))
    frame = ReadingsFrame(7, 8, 9, readings)
    data = encode_frame(frame, KEY)
    assert decode_frame(data, KEY) == frame
    assert list(decode_readings(data, KEY).readings["idx"]) == list(range(len(readings)))
