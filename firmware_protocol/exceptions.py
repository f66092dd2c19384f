"""The one error tree of ``firmware_protocol``.

::

    BikesenseError                the root every bikesense package's errors share
     └── ProtocolError            anything this package raises on purpose
          ├── RemoteProtocolError the peer (a kit, the network) sent bytes we refuse;
          │                       carries .reason (RejectReason), .offset and .kit_id
          └── LocalProtocolError  we were asked to do something the protocol forbids
                                  (encode a value out of range, an empty batch, a bad key)

Ingest catches :class:`RemoteProtocolError` and files the frame in its rejects
table under ``str(exc.reason)``; a :class:`LocalProtocolError` is a bug in the
caller and should surface as one.
"""

from __future__ import annotations

from enum import StrEnum

from bikesense.exceptions import BikesenseError


class RejectReason(StrEnum):
    """Why a frame or message was refused; the value is what ingest stores."""

    TRUNCATED = "truncated"  # fewer bytes than the header or the length field promise
    BAD_MAGIC = "bad_magic"  # does not start with b"BS": not a bikesense frame
    UNSUPPORTED_VERSION = "unsupported_version"  # a version this decoder does not speak
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"  # authenticated, but not a type we know
    BAD_LENGTH = "bad_length"  # length field impossible, or disagrees with count; trailing bytes
    BAD_CHECKSUM = "bad_checksum"  # CRC-32 mismatch: corrupted in transit or by a firmware bug
    BAD_MAC = "bad_mac"  # HMAC mismatch: wrong key, forged or tampered frame
    UNKNOWN_KIT = "unknown_kit"  # the key lookup knows no kit with this id
    TOO_MANY_READINGS = "too_many_readings"  # count above MAX_READINGS_PER_FRAME
    BAD_VALUE = "bad_value"  # a field outside its documented wire range
    BAD_JSON = "bad_json"  # status message: not UTF-8 JSON, or not a JSON object


class ProtocolError(BikesenseError):
    """Base of every error ``firmware_protocol`` raises on purpose."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we refuse. Exactly one reason, and where it was found.

    ``offset`` is the byte offset in the frame (or status payload) of the field at
    fault, or of the end of the data for ``truncated``; None when no single byte
    is to blame. ``kit_id`` is the kit named in the header when it could be read.
    """

    def __init__(
        self, reason: RejectReason, offset: int | None, detail: str, *, kit_id: int | None = None
    ) -> None:
        self.reason = reason
        self.offset = offset
        self.detail = detail
        self.kit_id = kit_id
        where = "" if offset is None else f" at byte {offset}"
        kit = "" if kit_id is None else f" (kit {kit_id})"
        super().__init__(f"{reason.value}{where}{kit}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only kit_id needs help to survive pickling (multiprocessing, faust).
        return (_rebuild_remote, (self.reason, self.offset, self.detail, self.kit_id))


def _rebuild_remote(
    reason: RejectReason, offset: int | None, detail: str, kit_id: int | None
) -> RemoteProtocolError:
    return RemoteProtocolError(reason, offset, detail, kit_id=kit_id)


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol cannot express."""
