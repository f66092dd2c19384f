"""Hypothesis strategies over the whole v1 value space, absent values and extremes included."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from firmware_protocol import GnssFix, Reading, ReadingsFrame, StatusBits, StatusMessage
from firmware_protocol.wire import MAX_DT_MS, MAX_TS_MS

u32 = st.integers(0, 2**32 - 1)


def _scaled(scale: int, lo: int, hi: int) -> st.SearchStrategy[float | None]:
    """None, or a value on the wire grid (raw / scale) -- extremes drawn often."""
    raw = st.one_of(st.sampled_from([lo, hi, 0 if lo <= 0 <= hi else lo]), st.integers(lo, hi))
    return st.one_of(st.none(), raw.map(lambda r: r / scale))


u16_field = _scaled(10, 0, 0xFFFE)
u16_centi = _scaled(100, 0, 0xFFFE)


@st.composite
def readings_at(draw: st.DrawFn, base_ts: int) -> Reading:
    span = min(MAX_DT_MS, MAX_TS_MS - base_ts)
    ts = draw(
        st.one_of(st.just(base_ts), st.just(base_ts + span), st.integers(base_ts, base_ts + span))
    )
    position = draw(
        st.one_of(
            st.none(),
            st.tuples(
                st.integers(-900_000_000, 900_000_000), st.integers(-1_800_000_000, 1_800_000_000)
            ),
            st.sampled_from([(900_000_000, 1_800_000_000), (-900_000_000, -1_800_000_000)]),
        )
    )
    return Reading(
        ts_ms=ts,
        lat_deg=None if position is None else position[0] / 10_000_000,
        lon_deg=None if position is None else position[1] / 10_000_000,
        gnss_fix=draw(st.sampled_from(GnssFix)),
        hdop=draw(u16_centi),
        satellites=draw(st.one_of(st.none(), st.integers(0, 127))),
        speed_mps=draw(u16_centi),
        pm1_ugm3=draw(u16_field),
        pm25_ugm3=draw(u16_field),
        pm10_ugm3=draw(u16_field),
        no2_ugm3=draw(u16_field),
        noise_laeq_db=draw(u16_field),
        noise_lamax_db=draw(u16_field),
        interval_ms=draw(st.integers(0, 0xFFFF)),
        temperature_c=draw(_scaled(100, -0x7FFF, 0x7FFF)),
        humidity_pct=draw(_scaled(10, 0, 1000)),
        status=StatusBits(draw(st.integers(0, 0xFFFF))),
    )


@st.composite
def frames(draw: st.DrawFn, max_readings: int = 12) -> ReadingsFrame:
    base = draw(
        st.one_of(st.sampled_from([0, MAX_TS_MS, MAX_TS_MS - MAX_DT_MS]), st.integers(0, MAX_TS_MS))
    )
    readings = draw(st.lists(readings_at(base), min_size=1, max_size=max_readings))
    # The oldest reading sets the base; make sure one sits exactly on it sometimes.
    if draw(st.booleans()):
        readings[0] = dataclasses.replace(readings[0], ts_ms=base)
    return ReadingsFrame(draw(u32), draw(u32), draw(u32), tuple(readings))


finite_pct = st.floats(0, 100, allow_nan=False)

status_messages = st.builds(
    StatusMessage,
    battery_pct=st.one_of(st.none(), finite_pct),
    battery_v=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    firmware_version=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=32
    ),
    uptime_s=u32,
    queue_depth=u32,
    ts_ms=st.integers(0, MAX_TS_MS),
    kit_id=u32,
    boot_id=st.one_of(st.none(), u32),
    status=st.integers(0, 0xFFFF).map(StatusBits),
)
