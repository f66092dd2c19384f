"""Wire layout of protocol version 1: every offset, size, scale and sentinel.

This module is the executable twin of ``docs/protocol.md``; section numbers in
comments refer to that page. Everything is little-endian (§2: the MCUs kits
use -- ARM Cortex-M, ESP32, RISC-V -- are little-endian, and so is numpy on
the servers, so neither side swaps bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np

#: First two bytes of every frame, in every version (§3).
MAGIC: Final = b"BS"
#: The version this package encodes and decodes.
VERSION: Final = 1


class MessageType(IntEnum):
    """Message types of version 1 (§3.2). Anything else decodes to an UnknownFrame."""

    READINGS = 1


#: The common header of every v1 frame (§3):
#: magic, version, message type, frame length, count, kit id, boot id, sequence.
HEADER: Final = struct.Struct("<2sBBHHIII")
HEADER_BYTES: Final = HEADER.size  # 20
OFFSET_VERSION: Final = 2
OFFSET_MESSAGE_TYPE: Final = 3
OFFSET_FRAME_LEN: Final = 4
OFFSET_COUNT: Final = 6
OFFSET_KIT_ID: Final = 8

#: Trailer (§5): CRC-32 over everything before it, then the truncated HMAC over
#: everything before the MAC (so the MAC also covers the CRC).
CRC: Final = struct.Struct("<I")
CRC_BYTES: Final = 4
#: 128 bits: half of SHA-256's output, the minimum RFC 2104 §5 recommends; a
#: forger's chance per attempt is 2^-128, and it costs 16 bytes per frame.
MAC_BYTES: Final = 16
TRAILER_BYTES: Final = CRC_BYTES + MAC_BYTES
#: A per-kit key is 32 random bytes: the SHA-256 block-size-independent choice
#: of RFC 2104 §3 (at least the hash output length).
KEY_BYTES: Final = 32
#: The smallest frame of any type: a header and a trailer, no body.
MIN_FRAME_BYTES: Final = HEADER_BYTES + TRAILER_BYTES

#: Readings body (§4): base timestamp, then ``count`` fixed-size records.
BASE_TS: Final = struct.Struct("<Q")
OFFSET_BASE_TS: Final = HEADER_BYTES  # 20
OFFSET_RECORDS: Final = OFFSET_BASE_TS + BASE_TS.size  # 28

#: One reading on the wire, 38 bytes, in wire units (§4.2).
RECORD_DTYPE: Final = np.dtype(
    [
        ("dt_ms", "<u4"),  # ms after base_ts_ms
        ("lat_e7", "<i4"),  # 1e-7 degree
        ("lon_e7", "<i4"),
        ("hdop_x100", "<u2"),
        ("speed_cm_s", "<u2"),
        ("pm1_x10", "<u2"),  # 0.1 µg/m³
        ("pm25_x10", "<u2"),
        ("pm10_x10", "<u2"),
        ("no2_x10", "<u2"),
        ("laeq_x10", "<u2"),  # 0.1 dB(A)
        ("lamax_x10", "<u2"),
        ("interval_ms", "<u2"),
        ("temp_x100", "<i2"),  # 0.01 °C
        ("rh_x10", "<u2"),  # 0.1 %
        ("status", "<u2"),
        ("gnss_fix", "u1"),
        ("satellites", "u1"),
    ]
)
#: The same record for one-at-a-time code (the object API, the tests).
RECORD: Final = struct.Struct("<IiiHHHHHHHHHhHHBB")
RECORD_BYTES: Final = RECORD.size  # 38
assert RECORD_DTYPE.itemsize == RECORD_BYTES

#: Byte offset of each field inside a record, for error messages.
FIELD_OFFSETS: Final[dict[str, int]] = {
    name: int(spec[1]) for name, spec in (RECORD_DTYPE.fields or {}).items()
}

#: Fixed bytes around the records of a readings frame: header, base_ts, trailer.
READINGS_OVERHEAD_BYTES: Final = OFFSET_RECORDS + TRAILER_BYTES  # 48
#: Kits buffer while offline and upload in bursts; 1024 readings is 17 minutes at
#: 1 Hz in one frame of 38 KiB -- small enough for an ESP32's RAM and any broker's
#: packet limit, large enough that the MQTT per-message cost stays negligible.
MAX_READINGS_PER_FRAME: Final = 1024
#: The largest v1 frame of any message type; longer frames are refused unread.
MAX_FRAME_BYTES: Final = READINGS_OVERHEAD_BYTES + MAX_READINGS_PER_FRAME * RECORD_BYTES  # 38960

#: Largest timestamp, Unix ms: 2^53 - 1, exact in a double (JSON, JavaScript).
MAX_TS_MS: Final = 2**53 - 1
#: Largest offset of a reading after the frame's base timestamp (u32): about 49.7 days.
MAX_DT_MS: Final = 2**32 - 1


def readings_frame_bytes(count: int) -> int:
    """Length of a readings frame with ``count`` readings."""
    return READINGS_OVERHEAD_BYTES + count * RECORD_BYTES


@dataclass(frozen=True, slots=True)
class ScaledField:
    """A physical quantity carried as a scaled integer, with a 'no value' sentinel (§4.3)."""

    name: str  # column in READING_DTYPE / attribute of Reading
    wire: str  # field of RECORD_DTYPE
    scale: int  # wire = round(physical * scale)
    absent: int  # the wire value that means "no value"
    lo: int  # smallest valid wire value
    hi: int  # largest valid wire value
    unit: str


U16_ABSENT: Final = 0xFFFF
I16_ABSENT: Final = -0x8000
I32_ABSENT: Final = -0x8000_0000
U8_ABSENT: Final = 0xFF

SCALED_FIELDS: Final = (
    ScaledField("lat_deg", "lat_e7", 10_000_000, I32_ABSENT, -900_000_000, 900_000_000, "°"),
    ScaledField("lon_deg", "lon_e7", 10_000_000, I32_ABSENT, -1_800_000_000, 1_800_000_000, "°"),
    ScaledField("hdop", "hdop_x100", 100, U16_ABSENT, 0, 0xFFFE, ""),
    ScaledField("speed_mps", "speed_cm_s", 100, U16_ABSENT, 0, 0xFFFE, "m/s"),
    ScaledField("pm1_ugm3", "pm1_x10", 10, U16_ABSENT, 0, 0xFFFE, "µg/m³"),
    ScaledField("pm25_ugm3", "pm25_x10", 10, U16_ABSENT, 0, 0xFFFE, "µg/m³"),
    ScaledField("pm10_ugm3", "pm10_x10", 10, U16_ABSENT, 0, 0xFFFE, "µg/m³"),
    ScaledField("no2_ugm3", "no2_x10", 10, U16_ABSENT, 0, 0xFFFE, "µg/m³"),
    ScaledField("noise_laeq_db", "laeq_x10", 10, U16_ABSENT, 0, 0xFFFE, "dB(A)"),
    ScaledField("noise_lamax_db", "lamax_x10", 10, U16_ABSENT, 0, 0xFFFE, "dB(A)"),
    ScaledField("temperature_c", "temp_x100", 100, I16_ABSENT, -0x7FFF, 0x7FFF, "°C"),
    ScaledField("humidity_pct", "rh_x10", 10, U16_ABSENT, 0, 1000, "%"),
)

#: GNSS fix values (§4.2): 0 none, 1 2-D, 2 3-D; 3..255 are invalid in v1.
MAX_GNSS_FIX: Final = 2
#: Satellites used in the fix: 0..127 (the array column is int8); 255 = not reported.
MAX_SATELLITES: Final = 127
MAX_INTERVAL_MS: Final = 0xFFFF
MAX_STATUS: Final = 0xFFFF
MAX_U32: Final = 0xFFFF_FFFF
