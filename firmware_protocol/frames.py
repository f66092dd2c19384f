"""The typed values of the protocol: headers, readings, frames, status bits.

Frozen, slotted dataclasses, in physical units with ``None`` for "no value".
They are what the object API (:func:`~firmware_protocol.codec.encode_frame`,
:func:`~firmware_protocol.codec.decode_frame`) takes and returns; the numpy
fast path carries the same values as READING_DTYPE rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag


class StatusBits(IntFlag):
    """Device status bits of a reading (docs/protocol.md §4.4).

    Bits 8..15 are reserved: kits send them as 0, decoders keep whatever they
    find (IntFlag keeps unknown bits), so a v1 server never loses a newer kit's flag.
    """

    NONE = 0
    WARMING_UP = 1 << 0  # a sensor has not reached its stated warm-up time yet
    PM_FAULT = 1 << 1  # the PM sensor failed or reported an error
    NO2_FAULT = 1 << 2  # the NO2 cell failed or reported an error
    NOISE_FAULT = 1 << 3  # the sound level module failed
    GNSS_FAULT = 1 << 4  # the GNSS receiver does not answer (not merely "no fix")
    LOW_BATTERY = 1 << 5  # battery below the kit's low-voltage threshold
    TH_FAULT = 1 << 6  # the temperature / humidity sensor failed
    CLOCK_UNSYNCED = 1 << 7  # ts_ms comes from a free-running clock, not GNSS or NTP time


class GnssFix(IntEnum):
    """GNSS fix quality; position fields are meaningful only with a fix."""

    NONE = 0
    FIX_2D = 1
    FIX_3D = 2


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The common v1 header (§3), readable before authentication by :func:`peek_header`."""

    version: int
    message_type: int  # a MessageType value, or an unknown type's number
    frame_len: int  # total frame length in bytes, header to MAC
    count: int  # readings in a readings frame; type-specific otherwise
    kit_id: int
    boot_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading, in physical units; ``None`` means the kit had no value.

    ``ts_ms`` is Unix epoch milliseconds (UTC). ``interval_ms`` is the length of
    the measuring interval the reading covers (0: not reported). Values are
    rounded to the wire resolution on encoding (docs/protocol.md §4.2).
    """

    ts_ms: int
    lat_deg: float | None = None
    lon_deg: float | None = None
    gnss_fix: GnssFix = GnssFix.NONE
    hdop: float | None = None
    satellites: int | None = None
    speed_mps: float | None = None
    pm1_ugm3: float | None = None
    pm25_ugm3: float | None = None
    pm10_ugm3: float | None = None
    no2_ugm3: float | None = None
    noise_laeq_db: float | None = None
    noise_lamax_db: float | None = None
    interval_ms: int = 0
    temperature_c: float | None = None
    humidity_pct: float | None = None
    status: StatusBits = StatusBits.NONE


@dataclass(frozen=True, slots=True)
class ReadingsFrame:
    """A batch of 1..MAX_READINGS_PER_FRAME readings from one kit.

    Reading ``i`` has the identity (kit_id, boot_id, seq, i).
    """

    kit_id: int
    boot_id: int
    seq: int
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """An authenticated v1 frame of a message type this decoder does not know.

    Returned rather than raised so that a kit running newer firmware is not
    treated as hostile; ``body`` is everything between header and trailer.
    """

    header: FrameHeader
    body: bytes
