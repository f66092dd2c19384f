"""The numpy fast path: a frame's readings straight into / out of READING_DTYPE.

Decoding is the envelope checks (CRC-32, HMAC) plus one ``np.frombuffer`` over
the fixed-size records and a few column operations; the cost per reading is a
few nanoseconds, so frames of a few dozen readings already decode well above
a million readings per second (``bench/bench_decode.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_protocol.envelope import KeySource, open_frame, seal_frame
from firmware_protocol.exceptions import RejectReason, RemoteProtocolError
from firmware_protocol.frames import FrameHeader
from firmware_protocol.records import array_to_records, decode_to_array, records_body
from firmware_protocol.wire import OFFSET_MESSAGE_TYPE, MessageType


@dataclass(frozen=True, slots=True)
class DecodedReadings:
    """An authenticated readings frame: its header and its readings as READING_DTYPE rows."""

    header: FrameHeader
    readings: np.ndarray


def encode_readings(kit_id: int, boot_id: int, seq: int, readings: np.ndarray,
                    key: bytes) -> bytes:
    """Encode an array of READING_DTYPE readings as one authenticated frame.

    The array's kit_id / boot_id / seq / idx columns are ignored: the header
    carries the first three and a reading's index is its position. Values are
    rounded to the wire resolution. Raises LocalProtocolError for an empty
    batch, more than MAX_READINGS_PER_FRAME readings, or a value out of range.
    """
    base_ts, rec = array_to_records(readings)
    return seal_frame(MessageType.READINGS, records_body(base_ts, rec), key,
                      count=len(rec), kit_id=kit_id, boot_id=boot_id, seq=seq)


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
            RejectReason.UNKNOWN_MESSAGE_TYPE, OFFSET_MESSAGE_TYPE,
            f"message type {header.message_type} is not a readings frame "
            f"({MessageType.READINGS.value})", kit_id=header.kit_id)
    return DecodedReadings(header, decode_to_array(data, header))
