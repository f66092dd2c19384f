"""bikesense firmware wire protocol, version 1: sans-I/O, bytes in and out.

The specification is ``docs/protocol.md``; ``firmware_protocol/c/`` holds the
C reference encoder, and ``tests/vectors/`` the golden frames both must match.

Two APIs over the same frames:

* the numpy fast path, what ingest uses: :func:`encode_readings` and
  :func:`decode_readings` (READING_DTYPE arrays);
* the object API, for tools and tests: :func:`encode_frame` and
  :func:`decode_frame` (:class:`ReadingsFrame` of :class:`Reading`).

Bad input from a kit raises :class:`RemoteProtocolError` (with ``.reason`` and
``.offset``) and nothing else; misuse raises :class:`LocalProtocolError`.
"""

from firmware_protocol.arrays import DecodedReadings, decode_readings, encode_readings
from firmware_protocol.batch import DecodedBatch, decode_readings_many
from firmware_protocol.codec import array_to_frame, decode_frame, encode_frame, frame_to_array
from firmware_protocol.envelope import KeySource, peek_header
from firmware_protocol.exceptions import (
    LocalProtocolError,
    ProtocolError,
    RejectReason,
    RemoteProtocolError,
)
from firmware_protocol.frames import (
    FrameHeader,
    GnssFix,
    Reading,
    ReadingsFrame,
    StatusBits,
    UnknownFrame,
)
from firmware_protocol.readings import IDENTITY_FIELDS, READING_DTYPE, empty_readings
from firmware_protocol.status import (
    MAX_STATUS_BYTES,
    StatusMessage,
    decode_status,
    encode_status,
)
from firmware_protocol.wire import (
    KEY_BYTES,
    MAC_BYTES,
    MAX_FRAME_BYTES,
    MAX_READINGS_PER_FRAME,
    MAX_TS_MS,
    VERSION,
    MessageType,
)

__all__ = [
    "IDENTITY_FIELDS",
    "KEY_BYTES",
    "MAC_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_READINGS_PER_FRAME",
    "MAX_STATUS_BYTES",
    "MAX_TS_MS",
    "READING_DTYPE",
    "VERSION",
    "DecodedBatch",
    "DecodedReadings",
    "FrameHeader",
    "GnssFix",
    "KeySource",
    "LocalProtocolError",
    "MessageType",
    "ProtocolError",
    "Reading",
    "ReadingsFrame",
    "RejectReason",
    "RemoteProtocolError",
    "StatusBits",
    "StatusMessage",
    "UnknownFrame",
    "array_to_frame",
    "decode_frame",
    "decode_readings",
    "decode_readings_many",
    "decode_status",
    "empty_readings",
    "encode_frame",
    "encode_readings",
    "encode_status",
    "frame_to_array",
    "peek_header",
]
