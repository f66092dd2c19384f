"""The object API: ReadingsFrame <-> bytes, one Reading at a time.

Slower than the numpy path in :mod:`firmware_protocol.arrays` and written
independently of it on purpose (``struct`` and plain ints, no numpy columns),
so that the tests can hold the two against each other. Use it for tests,
tools and small volumes; ingest uses the arrays.
"""

from __future__ import annotations

import math

import numpy as np

from firmware_protocol.envelope import KeySource, open_frame, seal_frame
from firmware_protocol.exceptions import LocalProtocolError
from firmware_protocol.frames import GnssFix, Reading, ReadingsFrame, StatusBits, UnknownFrame
from firmware_protocol.readings import empty_readings
from firmware_protocol.records import array_to_records, parse_records
from firmware_protocol.wire import (
    BASE_TS,
    HEADER_BYTES,
    MAX_DT_MS,
    MAX_GNSS_FIX,
    MAX_INTERVAL_MS,
    MAX_READINGS_PER_FRAME,
    MAX_SATELLITES,
    MAX_STATUS,
    MAX_TS_MS,
    RECORD,
    RECORD_DTYPE,
    SCALED_FIELDS,
    TRAILER_BYTES,
    U8_ABSENT,
    MessageType,
)

_WIRE_NAMES: tuple[str, ...] = RECORD_DTYPE.names or ()


def encode_frame(frame: ReadingsFrame, key: bytes) -> bytes:
    """A complete, authenticated readings frame; LocalProtocolError on misuse."""
    readings = frame.readings
    if not readings:
        raise LocalProtocolError("a readings frame carries at least one reading")
    if len(readings) > MAX_READINGS_PER_FRAME:
        raise LocalProtocolError(
            f"{len(readings)} readings; at most {MAX_READINGS_PER_FRAME} per frame: split the batch"
        )
    for i, r in enumerate(readings):
        if (
            isinstance(r.ts_ms, bool)
            or not isinstance(r.ts_ms, int)
            or not 0 <= r.ts_ms <= MAX_TS_MS
        ):
            raise LocalProtocolError(f"reading {i}: ts_ms={r.ts_ms!r} is not an int in 0..2^53-1")
    base = min(r.ts_ms for r in readings)
    span = max(r.ts_ms for r in readings) - base
    if span > MAX_DT_MS:
        raise LocalProtocolError(
            f"readings span {span} ms; one frame covers at most {MAX_DT_MS} ms (49.7 days)"
        )
    body = bytearray(BASE_TS.pack(base))
    for i, r in enumerate(readings):
        body += RECORD.pack(*_record_values(i, r, base))
    return seal_frame(
        MessageType.READINGS,
        bytes(body),
        key,
        count=len(readings),
        kit_id=frame.kit_id,
        boot_id=frame.boot_id,
        seq=frame.seq,
    )


def decode_frame(data: bytes, key: KeySource) -> ReadingsFrame | UnknownFrame:
    """Authenticate and decode one frame; RemoteProtocolError for anything we refuse.

    A genuine frame of a message type this version does not know comes back
    as an :class:`UnknownFrame` rather than an error.
    """
    header = open_frame(data, key)
    if header.message_type != MessageType.READINGS:
        return UnknownFrame(header, bytes(data[HEADER_BYTES : header.frame_len - TRAILER_BYTES]))
    base, rec = parse_records(data, header)
    readings = tuple(_reading(base, row) for row in rec.tolist())
    return ReadingsFrame(header.kit_id, header.boot_id, header.seq, readings)


def frame_to_array(frame: ReadingsFrame) -> np.ndarray:
    """The readings of ``frame`` as READING_DTYPE rows, as :func:`decode_readings` gives them."""
    out = empty_readings(len(frame.readings))
    out["kit_id"] = frame.kit_id
    out["boot_id"] = frame.boot_id
    out["seq"] = frame.seq
    out["idx"] = np.arange(len(frame.readings), dtype=np.uint16)
    for i, r in enumerate(frame.readings):
        row = out[i]
        row["ts_ms"] = r.ts_ms
        for f in SCALED_FIELDS:
            value = getattr(r, f.name)
            row[f.name] = math.nan if value is None else value
        row["gnss_fix"] = r.gnss_fix
        row["satellites"] = -1 if r.satellites is None else r.satellites
        row["interval_ms"] = r.interval_ms
        row["status"] = r.status
    return out


def array_to_frame(kit_id: int, boot_id: int, seq: int, readings: np.ndarray) -> ReadingsFrame:
    """The object form of an array of readings, rounded to the wire resolution.

    The array's identity columns are ignored, as in :func:`encode_readings`.
    """
    base, rec = array_to_records(readings)
    return ReadingsFrame(kit_id, boot_id, seq, tuple(_reading(base, row) for row in rec.tolist()))


def _record_values(i: int, r: Reading, base: int) -> tuple[int, ...]:
    wire: dict[str, int] = {"dt_ms": r.ts_ms - base}
    for f in SCALED_FIELDS:
        value = getattr(r, f.name)
        if value is None:
            wire[f.wire] = f.absent
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise LocalProtocolError(
                f"reading {i}: {f.name}={value!r} is not a number (use None for no value)"
            )
        scaled = value * f.scale
        raw = round(scaled) if math.isfinite(scaled) else None
        if raw is None or not f.lo <= raw <= f.hi:
            raise LocalProtocolError(
                f"reading {i}: {f.name}={value!r} is outside the wire range "
                f"{f.lo / f.scale:g}..{f.hi / f.scale:g} {f.unit}".rstrip()
            )
        wire[f.wire] = raw
    if (r.lat_deg is None) != (r.lon_deg is None):
        raise LocalProtocolError(f"reading {i}: lat_deg and lon_deg must be both None or neither")
    wire["gnss_fix"] = _int(i, "gnss_fix", r.gnss_fix, 0, MAX_GNSS_FIX)
    wire["satellites"] = (
        U8_ABSENT
        if r.satellites is None
        else _int(i, "satellites", r.satellites, 0, MAX_SATELLITES)
    )
    wire["interval_ms"] = _int(i, "interval_ms", r.interval_ms, 0, MAX_INTERVAL_MS)
    wire["status"] = _int(i, "status", r.status, 0, MAX_STATUS)
    return tuple(wire[name] for name in _WIRE_NAMES)


def _int(i: int, name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise LocalProtocolError(f"reading {i}: {name}={value!r} is not an int in {lo}..{hi}")
    return int(value)


def _reading(base: int, row: tuple[int, ...]) -> Reading:
    wire = dict(zip(_WIRE_NAMES, row, strict=True))

    def physical(name: str) -> float | None:
        f = _SCALED[name]
        raw = wire[f.wire]
        return None if raw == f.absent else raw / f.scale

    sats = wire["satellites"]
    return Reading(
        ts_ms=base + wire["dt_ms"],
        lat_deg=physical("lat_deg"),
        lon_deg=physical("lon_deg"),
        gnss_fix=GnssFix(wire["gnss_fix"]),
        hdop=physical("hdop"),
        satellites=None if sats == U8_ABSENT else sats,
        speed_mps=physical("speed_mps"),
        pm1_ugm3=physical("pm1_ugm3"),
        pm25_ugm3=physical("pm25_ugm3"),
        pm10_ugm3=physical("pm10_ugm3"),
        no2_ugm3=physical("no2_ugm3"),
        noise_laeq_db=physical("noise_laeq_db"),
        noise_lamax_db=physical("noise_lamax_db"),
        interval_ms=wire["interval_ms"],
        temperature_c=physical("temperature_c"),
        humidity_pct=physical("humidity_pct"),
        status=StatusBits(wire["status"]),
    )


_SCALED = {f.name: f for f in SCALED_FIELDS}
