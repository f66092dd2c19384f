"""Readings bodies (docs/protocol.md §4): the reference checks, and arrays to records.

``check_body`` and ``check_records`` are the clear statement of §6 checks
10-15 that the object API runs, and that the fast path in
:mod:`firmware_protocol.arrays` falls back to for its error messages.
``array_to_records`` turns READING_DTYPE rows into wire records, rounding and
range-checking (LocalProtocolError) column by column.
"""

from __future__ import annotations

import numpy as np

from firmware_protocol.exceptions import LocalProtocolError, RejectReason, RemoteProtocolError
from firmware_protocol.frames import FrameHeader
from firmware_protocol.readings import READING_DTYPE
from firmware_protocol.wire import (
    BASE_TS,
    FIELD_OFFSETS,
    I32_ABSENT,
    MAX_DT_MS,
    MAX_GNSS_FIX,
    MAX_INTERVAL_MS,
    MAX_READINGS_PER_FRAME,
    MAX_SATELLITES,
    MAX_STATUS,
    MAX_TS_MS,
    OFFSET_BASE_TS,
    OFFSET_COUNT,
    OFFSET_FRAME_LEN,
    OFFSET_RECORDS,
    RECORD_BYTES,
    RECORD_DTYPE,
    SCALED_FIELDS,
    U8_ABSENT,
    ScaledField,
    readings_frame_bytes,
)

# ---------------------------------------------------------------- decoding


def _has_invalid_raw_values(f: ScaledField) -> bool:
    info = np.iinfo(RECORD_DTYPE[f.wire])
    valid = f.hi - f.lo + 1 + (not f.lo <= f.absent <= f.hi)
    return valid < int(info.max) - int(info.min) + 1


#: Fields where some raw values are neither valid nor the sentinel (latitude,
#: longitude, humidity); for the others every bit pattern means something.
_RANGE_CHECKED = tuple(f for f in SCALED_FIELDS if _has_invalid_raw_values(f))


def check_body(data: bytes, header: FrameHeader) -> int:
    """Check count and length of an authenticated readings frame; return its base timestamp."""
    count, kit_id = header.count, header.kit_id
    if count == 0:
        raise RemoteProtocolError(
            RejectReason.BAD_VALUE,
            OFFSET_COUNT,
            "a readings frame carries at least one reading",
            kit_id=kit_id,
        )
    if count > MAX_READINGS_PER_FRAME:
        raise RemoteProtocolError(
            RejectReason.TOO_MANY_READINGS,
            OFFSET_COUNT,
            f"{count} readings; at most {MAX_READINGS_PER_FRAME} per frame",
            kit_id=kit_id,
        )
    expected = readings_frame_bytes(count)
    if header.frame_len != expected:
        raise RemoteProtocolError(
            RejectReason.BAD_LENGTH,
            OFFSET_FRAME_LEN,
            f"frame length field says {header.frame_len}, {count} readings make {expected}",
            kit_id=kit_id,
        )
    (base_ts,) = BASE_TS.unpack_from(data, OFFSET_BASE_TS)
    if base_ts > MAX_TS_MS:
        raise RemoteProtocolError(
            RejectReason.BAD_VALUE,
            OFFSET_BASE_TS,
            f"base_ts_ms={base_ts} is above 2^53-1",
            kit_id=kit_id,
        )
    return int(base_ts)


def parse_records(data: bytes, header: FrameHeader) -> tuple[int, np.ndarray]:
    """The base timestamp and the validated records of an authenticated readings frame."""
    base_ts = check_body(data, header)
    records = np.frombuffer(data, RECORD_DTYPE, header.count, OFFSET_RECORDS)
    check_records(records, base_ts, header.kit_id)
    return base_ts, records


def check_records(rec: np.ndarray, base_ts: int, kit_id: int) -> None:
    """Raise bad_value for the first out-of-range field in the frame, by byte offset.

    The reference check: clear rather than fast. The fast path runs it only
    once its own combined mask has found something wrong.
    """
    if int(rec["dt_ms"].min()) != 0:
        # One encoding per set of readings (so a frame re-encodes to itself):
        # the base is the oldest timestamp, so some reading has offset 0.
        raise RemoteProtocolError(
            RejectReason.BAD_VALUE,
            OFFSET_BASE_TS,
            f"base_ts_ms={base_ts} is older than every reading (smallest dt_ms is "
            f"{int(rec['dt_ms'].min())}); it must be the oldest reading's timestamp",
            kit_id=kit_id,
        )
    problems: list[tuple[np.ndarray, str, str]] = []
    if base_ts > MAX_TS_MS - MAX_DT_MS:  # only then can base + dt pass 2^53-1
        problems.append((rec["dt_ms"] > MAX_TS_MS - base_ts, "dt_ms", "puts ts_ms above 2^53-1"))
    for f in _RANGE_CHECKED:
        raw = rec[f.wire]
        bad = ((raw < f.lo) | (raw > f.hi)) & (raw != f.absent)
        problems.append((bad, f.wire, f"outside {f.lo}..{f.hi} (absent: {f.absent})"))
    lat_absent = rec["lat_e7"] == I32_ABSENT
    lon_absent = rec["lon_e7"] == I32_ABSENT
    problems.append(
        (
            lat_absent != lon_absent,
            "lat_e7",
            "latitude and longitude must be both present or both absent",
        )
    )
    problems.append((rec["gnss_fix"] > MAX_GNSS_FIX, "gnss_fix", f"above {MAX_GNSS_FIX}"))
    sats = rec["satellites"]
    problems.append(
        (
            (sats > MAX_SATELLITES) & (sats != U8_ABSENT),
            "satellites",
            f"outside 0..{MAX_SATELLITES} (absent: {U8_ABSENT})",
        )
    )
    first: tuple[int, str] | None = None
    for bad, wire, why in problems:
        if bad.any():
            i = int(np.argmax(bad))
            offset = OFFSET_RECORDS + i * RECORD_BYTES + FIELD_OFFSETS[wire]
            if first is None or offset < first[0]:
                first = (offset, f"reading {i}: {wire}={rec[wire][i]} {why}")
    if first is not None:
        raise RemoteProtocolError(RejectReason.BAD_VALUE, first[0], first[1], kit_id=kit_id)


# ---------------------------------------------------------------- encoding

_REQUIRED_COLUMNS = frozenset(READING_DTYPE.names or ()) - {"kit_id", "boot_id", "seq", "idx"}


def array_to_records(readings: np.ndarray) -> tuple[int, np.ndarray]:
    """Base timestamp and wire records for an array of readings; LocalProtocolError on misuse."""
    if not isinstance(readings, np.ndarray) or readings.ndim != 1 or readings.dtype.names is None:
        raise LocalProtocolError("readings must be a one-dimensional READING_DTYPE array")
    missing = _REQUIRED_COLUMNS - set(readings.dtype.names)
    if missing:
        raise LocalProtocolError(f"readings lack the columns {sorted(missing)}")
    n = len(readings)
    if n == 0:
        raise LocalProtocolError("a readings frame carries at least one reading")
    if n > MAX_READINGS_PER_FRAME:
        raise LocalProtocolError(
            f"{n} readings; at most {MAX_READINGS_PER_FRAME} per frame: split the batch"
        )
    rec = np.zeros(n, RECORD_DTYPE)
    base_ts = _encode_ts(readings["ts_ms"], rec)
    for f in SCALED_FIELDS:
        values = np.asarray(readings[f.name], dtype=np.float64)
        absent = np.isnan(values)
        with np.errstate(invalid="ignore", over="ignore"):
            raw = np.rint(values * f.scale)
            bad = ~absent & ~((raw >= f.lo) & (raw <= f.hi))
        if bad.any():
            i = int(np.argmax(bad))
            raise LocalProtocolError(
                f"reading {i}: {f.name}={float(values[i])!r} is outside the wire range "
                f"{f.lo / f.scale:g}..{f.hi / f.scale:g} {f.unit} (NaN for no value)".rstrip()
            )
        raw[absent] = f.absent
        rec[f.wire] = raw
    if (np.isnan(readings["lat_deg"]) != np.isnan(readings["lon_deg"])).any():
        i = int(np.argmax(np.isnan(readings["lat_deg"]) != np.isnan(readings["lon_deg"])))
        raise LocalProtocolError(f"reading {i}: lat_deg and lon_deg must be both NaN or neither")
    _encode_int(readings, rec, "gnss_fix", 0, MAX_GNSS_FIX)
    sats = np.asarray(readings["satellites"], dtype=np.int64)
    _check_int_range(sats, "satellites", -1, MAX_SATELLITES)
    rec["satellites"] = np.where(sats < 0, U8_ABSENT, sats)
    _encode_int(readings, rec, "interval_ms", 0, MAX_INTERVAL_MS)
    _encode_int(readings, rec, "status", 0, MAX_STATUS)
    return base_ts, rec


def _encode_ts(ts_column: np.ndarray, rec: np.ndarray) -> int:
    ts = np.asarray(ts_column, dtype=np.int64)
    _check_int_range(ts, "ts_ms", 0, MAX_TS_MS)
    base = int(ts.min())
    span = int(ts.max()) - base
    if span > MAX_DT_MS:
        raise LocalProtocolError(
            f"readings span {span} ms; one frame covers at most {MAX_DT_MS} ms (49.7 days)"
        )
    rec["dt_ms"] = ts - base
    return base


def _encode_int(readings: np.ndarray, rec: np.ndarray, name: str, lo: int, hi: int) -> None:
    values = np.asarray(readings[name], dtype=np.int64)
    _check_int_range(values, name, lo, hi)
    rec[name] = values


def _check_int_range(values: np.ndarray, name: str, lo: int, hi: int) -> None:
    bad = (values < lo) | (values > hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise LocalProtocolError(f"reading {i}: {name}={int(values[i])} is outside {lo}..{hi}")


def records_body(base_ts: int, rec: np.ndarray) -> bytes:
    return BASE_TS.pack(base_ts) + rec.tobytes()
