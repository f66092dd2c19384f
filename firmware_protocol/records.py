"""Readings bodies (docs/protocol.md §4): wire records <-> READING_DTYPE arrays.

Vectorised with numpy both ways: a body is a base timestamp followed by
fixed-size records, so decoding is one ``np.frombuffer`` and a handful of
column operations, whatever the number of readings.
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
        raise RemoteProtocolError(RejectReason.BAD_VALUE, OFFSET_COUNT,
                                  "a readings frame carries at least one reading", kit_id=kit_id)
    if count > MAX_READINGS_PER_FRAME:
        raise RemoteProtocolError(
            RejectReason.TOO_MANY_READINGS, OFFSET_COUNT,
            f"{count} readings; at most {MAX_READINGS_PER_FRAME} per frame", kit_id=kit_id)
    expected = readings_frame_bytes(count)
    if header.frame_len != expected:
        raise RemoteProtocolError(
            RejectReason.BAD_LENGTH, OFFSET_FRAME_LEN,
            f"frame length field says {header.frame_len}, {count} readings make {expected}",
            kit_id=kit_id)
    (base_ts,) = BASE_TS.unpack_from(data, OFFSET_BASE_TS)
    if base_ts > MAX_TS_MS:
        raise RemoteProtocolError(RejectReason.BAD_VALUE, OFFSET_BASE_TS,
                                  f"base_ts_ms={base_ts} is above 2^53-1", kit_id=kit_id)
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
            RejectReason.BAD_VALUE, OFFSET_BASE_TS,
            f"base_ts_ms={base_ts} is older than every reading (smallest dt_ms is "
            f"{int(rec['dt_ms'].min())}); it must be the oldest reading's timestamp",
            kit_id=kit_id)
    problems: list[tuple[np.ndarray, str, str]] = []
    if base_ts > MAX_TS_MS - MAX_DT_MS:  # only then can base + dt pass 2^53-1
        problems.append((rec["dt_ms"] > MAX_TS_MS - base_ts, "dt_ms", "puts ts_ms above 2^53-1"))
    for f in _RANGE_CHECKED:
        raw = rec[f.wire]
        bad = ((raw < f.lo) | (raw > f.hi)) & (raw != f.absent)
        problems.append((bad, f.wire, f"outside {f.lo}..{f.hi} (absent: {f.absent})"))
    lat_absent = rec["lat_e7"] == _LAT.absent
    lon_absent = rec["lon_e7"] == _LON.absent
    problems.append((lat_absent != lon_absent, "lat_e7",
                     "latitude and longitude must be both present or both absent"))
    problems.append((rec["gnss_fix"] > MAX_GNSS_FIX, "gnss_fix", f"above {MAX_GNSS_FIX}"))
    sats = rec["satellites"]
    problems.append(((sats > MAX_SATELLITES) & (sats != U8_ABSENT), "satellites",
                     f"outside 0..{MAX_SATELLITES} (absent: {U8_ABSENT})"))
    first: tuple[int, str] | None = None
    for bad, wire, why in problems:
        if bad.any():
            i = int(np.argmax(bad))
            offset = OFFSET_RECORDS + i * RECORD_BYTES + FIELD_OFFSETS[wire]
            if first is None or offset < first[0]:
                first = (offset, f"reading {i}: {wire}={rec[wire][i]} {why}")
    if first is not None:
        raise RemoteProtocolError(RejectReason.BAD_VALUE, first[0], first[1], kit_id=kit_id)


# The fast path. numpy's cost per call, not per reading, dominates at the sizes
# of frames, so it is written to make few calls:
# - each record is seen as 19 little-endian 16-bit words (every field starts at
#   an even offset);
# - the 16-bit words from hdop to the gnss_fix / satellites pair become float32
#   in one gather from a lookup table (one 65,536-entry row per kind of word:
#   "no value" already NaN, an invalid value +inf), instead of a divide, a
#   compare and a masked store per field; one isinf() then checks them all;
# - the output is written through a view of READING_DTYPE that groups adjacent
#   columns (lat+lon, speed..lamax, temperature+humidity) into sub-arrays.
_WORDS = RECORD_BYTES // 2
_W = {name: offset // 2 for name, offset in FIELD_OFFSETS.items()}
_LAT, _LON = SCALED_FIELDS[0], SCALED_FIELDS[1]
_BY_WIRE = {f.wire: f for f in SCALED_FIELDS}
_FIRST16, _LAST16 = _W["hdop_x100"], _W["gnss_fix"]
assert _W["satellites"] == _W["gnss_fix"] == _WORDS - 1 == _LAST16
_NAMES16 = [name for name in RECORD_DTYPE.names or ()
            if _FIRST16 <= _W[name] <= _LAST16 and name != "satellites"]
assert [_W[name] for name in _NAMES16] == list(range(_FIRST16, _LAST16 + 1))
_COL = {name: i for i, name in enumerate(_NAMES16)}
assert _COL["lamax_x10"] - _COL["speed_cm_s"] == 6
assert _COL["rh_x10"] - _COL["temp_x100"] == 1


def _word_values(name: str) -> np.ndarray:
    """float64 meaning of every 16-bit word in field `name`: NaN absent, inf invalid."""
    word = np.arange(1 << 16)
    if name == "gnss_fix":  # the little-endian word (satellites << 8 | gnss_fix)
        fix, sats = word & 0xFF, word >> 8
        bad = (fix > MAX_GNSS_FIX) | ((sats > MAX_SATELLITES) & (sats != U8_ABSENT))
        return np.where(bad, np.inf, 0.0)
    f = _BY_WIRE.get(name)
    if f is None:  # interval_ms, status: the integer itself, exact in float32
        return word.astype(np.float64)
    raw = word.astype(np.uint16).view(np.int16) if f.absent < 0 else word
    # Divide in float64 and then round to float32: the path the object API's
    # floats take, so both give bit-identical columns.
    values = raw / float(f.scale)
    values[(raw < f.lo) | (raw > f.hi)] = np.inf
    values[raw == f.absent] = np.nan
    return values


def _lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """The distinct float32 rows, and the row each word of the range uses."""
    rows: list[np.ndarray] = []
    row_of: list[int] = []
    for name in _NAMES16:
        table = _word_values(name).astype(np.float32)
        for i, known in enumerate(rows):
            if np.array_equal(known, table, equal_nan=True):
                row_of.append(i)
                break
        else:
            row_of.append(len(rows))
            rows.append(table)
    return np.stack(rows), np.array(row_of, dtype=np.intp)


_LUT, _LUT_ROW = _lookup_tables()
_LUT_FLAT = _LUT.ravel()
_LUT_START = _LUT_ROW * (1 << 16)  # where each word's row starts in the flat table
_LATLON_LIMITS = np.array([_LAT.hi / _LAT.scale, _LON.hi / _LON.scale])
_FIX_BYTE, _SATS_BYTE = FIELD_OFFSETS["gnss_fix"], FIELD_OFFSETS["satellites"]
_IDX = np.arange(MAX_READINGS_PER_FRAME, dtype=np.uint16)


def _grouped_view(dtype: np.dtype) -> np.dtype:
    """READING_DTYPE with adjacent columns of one type merged into sub-arrays."""
    off = {name: int(spec[1]) for name, spec in (dtype.fields or {}).items()}
    fields = {
        "identity": (off["kit_id"], ("<u4", (3,))),  # kit_id, boot_id, seq
        "idx": (off["idx"], "<u2"),
        "ts_ms": (off["ts_ms"], "<i8"),
        "latlon": (off["lat_deg"], ("<f8", (2,))),
        "gnss_fix": (off["gnss_fix"], "u1"),
        "hdop": (off["hdop"], "<f4"),
        "satellites": (off["satellites"], "i1"),
        "speed_to_lamax": (off["speed_mps"], ("<f4", (7,))),
        "interval_ms": (off["interval_ms"], "<u4"),
        "temp_rh": (off["temperature_c"], ("<f4", (2,))),
        "status": (off["status"], "<u2"),
    }
    assert off["boot_id"] == off["kit_id"] + 4
    assert off["seq"] == off["kit_id"] + 8
    assert off["lon_deg"] == off["lat_deg"] + 8
    assert off["noise_lamax_db"] == off["speed_mps"] + 6 * 4
    assert off["humidity_pct"] == off["temperature_c"] + 4
    return np.dtype({
        "names": list(fields),
        "formats": [fmt for _, fmt in fields.values()],
        "offsets": [at for at, _ in fields.values()],
        "itemsize": dtype.itemsize,
    })


_GROUPED = _grouped_view(READING_DTYPE)
_SPEED_TO_LAMAX = slice(_COL["speed_cm_s"], _COL["lamax_x10"] + 1)
_TEMP_RH = slice(_COL["temp_x100"], _COL["rh_x10"] + 1)


def decode_to_array(data: bytes, header: FrameHeader) -> np.ndarray:
    """Validated READING_DTYPE rows of an authenticated readings frame, identity filled."""
    base_ts = check_body(data, header)
    n = header.count
    words = np.frombuffer(data, "<u2", n * _WORDS, OFFSET_RECORDS).reshape(n, _WORDS)
    pairs = words[:, :6].copy().view("<u4")  # dt_ms, lat_e7, lon_e7 as 32-bit words
    latlon_raw = pairs[:, 1:].view("<i4")
    latlon_absent = latlon_raw == I32_ABSENT
    latlon = latlon_raw / float(_LAT.scale)  # float64 division, as in the object API
    latlon[latlon_absent] = np.nan
    values = _LUT_FLAT[words[:, _FIRST16:_LAST16 + 1] + _LUT_START]

    # NaN compares False, so absent positions pass the range test.
    bad = int(np.count_nonzero(pairs[:, 0]) == n)  # no dt_ms is 0: base is not the oldest
    bad += int(np.count_nonzero(np.isinf(values)))
    bad += int(np.count_nonzero(np.abs(latlon) > _LATLON_LIMITS))
    bad += int(np.count_nonzero(latlon_absent[:, 0] != latlon_absent[:, 1]))
    if base_ts > MAX_TS_MS - MAX_DT_MS:
        bad += int(np.count_nonzero(pairs[:, 0] > MAX_TS_MS - base_ts))
    if bad:
        check_records(np.frombuffer(data, RECORD_DTYPE, n, OFFSET_RECORDS), base_ts,
                      header.kit_id)
        raise AssertionError("the fast and the reference value checks disagree")

    out = np.empty(n, READING_DTYPE)
    grouped = out.view(_GROUPED)
    grouped["identity"] = (header.kit_id, header.boot_id, header.seq)
    grouped["idx"] = _IDX[:n]
    grouped["ts_ms"] = pairs[:, 0] + np.int64(base_ts)
    grouped["latlon"] = latlon
    as_bytes = words.view(np.uint8)
    grouped["gnss_fix"] = as_bytes[:, _FIX_BYTE]
    grouped["satellites"] = as_bytes[:, _SATS_BYTE].view(np.int8)  # 255 -> -1: absent both ways
    grouped["hdop"] = values[:, _COL["hdop_x100"]]
    grouped["speed_to_lamax"] = values[:, _SPEED_TO_LAMAX]
    grouped["interval_ms"] = words[:, _W["interval_ms"]]
    grouped["temp_rh"] = values[:, _TEMP_RH]
    grouped["status"] = words[:, _W["status"]]
    return out


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
            f"{n} readings; at most {MAX_READINGS_PER_FRAME} per frame: split the batch")
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
                f"{f.lo / f.scale:g}..{f.hi / f.scale:g} {f.unit} (NaN for no value)".rstrip())
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
            f"readings span {span} ms; one frame covers at most {MAX_DT_MS} ms (49.7 days)")
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
