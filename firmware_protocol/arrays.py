"""The numpy fast path: a frame's readings straight into / out of READING_DTYPE.

Decoding is the envelope checks (CRC-32, HMAC) plus one ``np.frombuffer`` over
the fixed-size records and about thirty numpy calls, however many readings the
frame holds: a fixed cost of some tens of microseconds per frame, then tens of
nanoseconds per reading. ``bench/bench_decode.py`` measures it by frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_protocol.envelope import KeySource, open_frame, seal_frame
from firmware_protocol.exceptions import RejectReason, RemoteProtocolError
from firmware_protocol.frames import FrameHeader
from firmware_protocol.readings import READING_DTYPE
from firmware_protocol.records import array_to_records, check_body, check_records, records_body
from firmware_protocol.wire import (
    FIELD_OFFSETS,
    I32_ABSENT,
    MAX_DT_MS,
    MAX_GNSS_FIX,
    MAX_READINGS_PER_FRAME,
    MAX_SATELLITES,
    MAX_TS_MS,
    OFFSET_MESSAGE_TYPE,
    OFFSET_RECORDS,
    RECORD_BYTES,
    RECORD_DTYPE,
    SCALED_FIELDS,
    U8_ABSENT,
    MessageType,
)


@dataclass(frozen=True, slots=True)
class DecodedReadings:
    """An authenticated readings frame: its header and its readings as READING_DTYPE rows."""

    header: FrameHeader
    readings: np.ndarray


def encode_readings(kit_id: int, boot_id: int, seq: int, readings: np.ndarray, key: bytes) -> bytes:
    """Encode an array of READING_DTYPE readings as one authenticated frame.

    The array's kit_id / boot_id / seq / idx columns are ignored: the header
    carries the first three and a reading's index is its position. Values are
    rounded to the wire resolution. Raises LocalProtocolError for an empty
    batch, more than MAX_READINGS_PER_FRAME readings, or a value out of range.
    """
    base_ts, rec = array_to_records(readings)
    return seal_frame(
        MessageType.READINGS,
        records_body(base_ts, rec),
        key,
        count=len(rec),
        kit_id=kit_id,
        boot_id=boot_id,
        seq=seq,
    )


def decode_readings(data: bytes, key: KeySource) -> DecodedReadings:
    """Authenticate a readings frame and decode its readings into a READING_DTYPE array.

    ``key`` is the kit's 32-byte key, or a function from kit id to key that
    returns None for an unknown kit. Every refusal is a RemoteProtocolError
    with ``.reason`` and ``.offset``; a genuine frame of another message type
    is refused as ``unknown_message_type``.
    """
    header = open_frame(data, key)
    if header.message_type != MessageType.READINGS:
        raise RemoteProtocolError(
            RejectReason.UNKNOWN_MESSAGE_TYPE,
            OFFSET_MESSAGE_TYPE,
            f"message type {header.message_type} is not a readings frame "
            f"({MessageType.READINGS.value})",
            kit_id=header.kit_id,
        )
    return DecodedReadings(header, decode_to_array(data, header))


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
_NAMES16 = [
    name
    for name in RECORD_DTYPE.names or ()
    if _FIRST16 <= _W[name] <= _LAST16 and name != "satellites"
]
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
    return np.dtype(
        {
            "names": list(fields),
            "formats": [fmt for _, fmt in fields.values()],
            "offsets": [at for at, _ in fields.values()],
            "itemsize": dtype.itemsize,
        }
    )


_GROUPED = _grouped_view(READING_DTYPE)


def _wire_view() -> np.dtype:
    """The record as the fast path reads it: lat+lon as a pair, the 16-bit words as a run."""
    fields = {
        "dt_ms": (FIELD_OFFSETS["dt_ms"], "<u4"),
        "latlon": (FIELD_OFFSETS["lat_e7"], ("<i4", (2,))),
        "words": (FIELD_OFFSETS["hdop_x100"], ("<u2", (len(_NAMES16),))),
        "interval_ms": (FIELD_OFFSETS["interval_ms"], "<u2"),
        "status": (FIELD_OFFSETS["status"], "<u2"),
        "gnss_fix": (FIELD_OFFSETS["gnss_fix"], "u1"),
        "satellites": (FIELD_OFFSETS["satellites"], "i1"),
    }
    assert FIELD_OFFSETS["lon_e7"] == FIELD_OFFSETS["lat_e7"] + 4
    return np.dtype(
        {
            "names": list(fields),
            "formats": [fmt for _, fmt in fields.values()],
            "offsets": [at for at, _ in fields.values()],
            "itemsize": RECORD_BYTES,
        }
    )


_WIRE_VIEW = _wire_view()
_SPEED_TO_LAMAX = slice(_COL["speed_cm_s"], _COL["lamax_x10"] + 1)
_TEMP_RH = slice(_COL["temp_x100"], _COL["rh_x10"] + 1)


def decode_to_array(data: bytes, header: FrameHeader) -> np.ndarray:
    """Validated READING_DTYPE rows of an authenticated readings frame, identity filled."""
    base_ts = check_body(data, header)
    n = header.count
    rec = np.frombuffer(data, _WIRE_VIEW, n, OFFSET_RECORDS)
    dt = rec["dt_ms"]
    latlon_raw = rec["latlon"]
    latlon_absent = latlon_raw == I32_ABSENT
    latlon = latlon_raw / float(_LAT.scale)  # float64 division, as in the object API
    latlon[latlon_absent] = np.nan
    values = _LUT_FLAT[rec["words"] + _LUT_START]

    # NaN compares False, so absent positions pass the range test.
    bad = int(np.count_nonzero(dt) == n)  # no dt_ms is 0: base is not the oldest
    bad += int(np.count_nonzero(np.isinf(values)))
    bad += int(np.count_nonzero(np.abs(latlon) > _LATLON_LIMITS))
    bad += int(np.count_nonzero(latlon_absent[:, 0] != latlon_absent[:, 1]))
    if base_ts > MAX_TS_MS - MAX_DT_MS:
        bad += int(np.count_nonzero(dt > MAX_TS_MS - base_ts))
    if bad:
        check_records(np.frombuffer(data, RECORD_DTYPE, n, OFFSET_RECORDS), base_ts, header.kit_id)
        raise AssertionError("the fast and the reference value checks disagree")

    out = np.empty(n, READING_DTYPE)
    grouped = out.view(_GROUPED)
    grouped["identity"] = (header.kit_id, header.boot_id, header.seq)
    grouped["idx"] = _IDX[:n]
    grouped["ts_ms"] = dt + np.int64(base_ts)
    grouped["latlon"] = latlon
    grouped["gnss_fix"] = rec["gnss_fix"]
    grouped["satellites"] = rec["satellites"]  # read as int8: 255 (absent) is -1, as it should
    grouped["hdop"] = values[:, _COL["hdop_x100"]]
    grouped["speed_to_lamax"] = values[:, _SPEED_TO_LAMAX]
    grouped["interval_ms"] = rec["interval_ms"]
    grouped["temp_rh"] = values[:, _TEMP_RH]
    grouped["status"] = rec["status"]
    return out
