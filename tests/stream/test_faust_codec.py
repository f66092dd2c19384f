"""The bytes of the distributed runtime: envelopes, message keys, the kit-state codec."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_protocol.readings import READING_DTYPE
from stream.core.batch import ENRICHED_DTYPE
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitState, Position, QaMemory, RideSpan, SensorRun
from stream.faust_app.codec import (
    decode_enriched,
    decode_kit_state,
    decode_readings,
    encode_enriched,
    encode_kit_state,
    encode_readings,
    kit_key,
    route_key,
)
from stream.faust_app.exceptions import EnvelopeError
from tests.stream.stream_factories import T0_MS, random_enriched, riding

# --- envelopes ------------------------------------------------------------------------------


def test_readings_envelope_round_trip_keeps_every_field_and_arrival_time() -> None:
    readings = riding(25, kit_id=9, seed=3)
    readings["hdop"][4] = np.nan
    received = T0_MS + np.arange(25, dtype=np.int64) * 7
    payload = encode_readings(readings, received)
    assert payload[:4] == b"BSR1"
    assert len(payload) == 8 + 25 * (READING_DTYPE.itemsize + 8)
    back, back_received = decode_readings(payload)
    assert back.dtype == READING_DTYPE
    assert back.tobytes() == readings.tobytes()  # NaN-exact, field by field
    np.testing.assert_array_equal(back_received, received)
    back["pm25_ugm3"][0] = 1.0  # decoded arrays are writable copies, not views of the message


def test_enriched_envelope_round_trip() -> None:
    rows = random_enriched(1, 40)
    payload = encode_enriched(rows)
    assert payload[:4] == b"BSE1"
    assert decode_enriched(payload).tobytes() == rows.tobytes()
    assert len(decode_enriched(encode_enriched(rows[:0]))) == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"BSR", "shorter than its 8-byte header"),
        (b"BSE1\x01\x00\x00\x00", "magic is b'BSE1', expected b'BSR1'"),
        (b"BSR1\x02\x00\x00\x00" + b"\x00" * 10, "of 2 rows must be 196 bytes (got 18)"),
    ],
)
def test_bad_readings_envelopes_say_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_readings(payload)


def test_encoding_refuses_the_wrong_dtype_or_length() -> None:
    with pytest.raises(EnvelopeError, match="READING_DTYPE"):
        encode_readings(random_enriched(0, 3), np.zeros(3, np.int64))
    with pytest.raises(EnvelopeError, match="3 readings but 2 arrival times"):
        encode_readings(riding(3), np.zeros(2, np.int64))
    with pytest.raises(EnvelopeError, match="ENRICHED_DTYPE"):
        encode_enriched(riding(3))


def test_keys() -> None:
    assert kit_key(4242) == b"4242"
    assert route_key(608433024048037887, 7) == b"608433024048037887"
    assert route_key(0, 7) == b"k7"


# --- kit state -----------------------------------------------------------------------------

_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_ms = st.integers(min_value=0, max_value=2**53)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_runs = st.builds(
    SensorRun,
    values=st.tuples(_floats) | st.tuples(_floats, _floats, _floats),
    start_ms=_ms,
    count=st.integers(0, 10**9),
)
_qa = st.builds(
    QaMemory,
    ride_id=_ints,
    boot_id=st.integers(0, 2**32 - 1),
    last_ts_ms=_ms,
    boot_start_ms=st.none() | _ms,
    anchor=st.none() | st.builds(Position, lat_deg=_floats, lon_deg=_floats, ts_ms=_ms),
    rejecting_since_ms=st.none() | _ms,
    pm_run=st.none() | _runs,
    no2_run=st.none() | _runs,
    noise_run=st.none() | _runs,
)
_states = st.builds(
    KitState,
    kit_id=st.integers(0, 2**32 - 1),
    rides=st.lists(
        st.builds(
            RideSpan, ride_id=_ints, boot_id=st.integers(0, 2**32 - 1), start_ms=_ms, end_ms=_ms
        ),
        max_size=4,
    ).map(tuple),
    qa=st.none() | _qa,
)


def _comparable(value: Any) -> Any:
    """The state as nested tuples with NaN replaced by a marker (NaN != NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(_comparable(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


@given(_states)
def test_kit_state_round_trip(state: KitState) -> None:
    blob = encode_kit_state(state)
    back = decode_kit_state(blob)
    assert _comparable(back) == _comparable(state)
    assert encode_kit_state(back) == blob


def test_states_the_core_produces_round_trip() -> None:
    readings = np.concatenate([riding(60, kit_id=1), riding(30, kit_id=2, speed_mps=0.0)])
    readings["no2_ugm3"][70:] = np.nan  # runs with absent values
    processed = process_batch(readings, T0_MS + 120_000, {}, CoreConfig())
    assert set(processed.updated) == {1, 2}
    for state in processed.updated.values():
        assert state.qa is not None
        assert _comparable(decode_kit_state(encode_kit_state(state))) == _comparable(state)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"not json", "kit state is not valid"),
        (b'{"v": 2, "kit": 1, "rides": [], "qa": null}', "version 2, expected 1"),
        (b'{"v": 1, "rides": [], "qa": null}', "kit state is not valid"),
        (b'{"v": 1, "kit": 1, "rides": [[1, 2]], "qa": null}', "kit state is not valid"),
    ],
)
def test_bad_kit_states_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        decode_kit_state(blob)


def test_enriched_dtype_is_what_the_envelope_carries() -> None:
    # A change of either dtype must come with a new magic (codec.py): this pins the sizes.
    assert (READING_DTYPE.itemsize, ENRICHED_DTYPE.itemsize) == (86, 114)
