"""Frame files: publications written to disk for replay and benchmarks.

A file is the 8-byte magic ``BSSIMFR1`` followed by records, each::

    publish_ms  int64 LE   simulated publish time, Unix epoch ms
    flags       uint8      bit 0: retain
    topic_len   uint16 LE
    payload_len uint32 LE
    topic       topic_len bytes, UTF-8, relative to the topic root ("kits/17/up")
    payload     payload_len bytes, exactly as published

Topics are stored without their root so that a replay can publish under any
root (tests use one of their own).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from simulators.exceptions import FrameFileError
from simulators.fleet import Kind, Publication

MAGIC = b"BSSIMFR1"
_RECORD = struct.Struct("<qBHI")
_RETAIN = 0x01
#: A record longer than this is not one of ours (frames are at most 38,960 bytes).
MAX_PAYLOAD_BYTES = 1 << 20


class FrameFileWriter:
    """Appends publications to a new frame file; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self._file: BinaryIO = path.open("wb")
        self._file.write(MAGIC)

    def send(self, pub: Publication) -> None:
        topic = pub.relative_topic.encode()
        self._file.write(
            _RECORD.pack(pub.publish_ms, _RETAIN if pub.retain else 0, len(topic), len(pub.payload))
        )
        self._file.write(topic)
        self._file.write(pub.payload)
        self.records += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_frame_file(path: Path) -> Iterator[Publication]:
    """The publications of a frame file, in file order; FrameFileError names the bad offset."""
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise FrameFileError(f"{path}: not a bikesense frame file (no {MAGIC.decode()} magic)")
        offset = len(MAGIC)
        while True:
            head = f.read(_RECORD.size)
            if not head:
                return
            if len(head) < _RECORD.size:
                raise FrameFileError(f"{path}: record header cut short at byte {offset}")
            publish_ms, flags, topic_len, payload_len = _RECORD.unpack(head)
            if payload_len > MAX_PAYLOAD_BYTES:
                raise FrameFileError(
                    f"{path}: record at byte {offset} claims a {payload_len}-byte payload"
                )
            body = f.read(topic_len + payload_len)
            if len(body) < topic_len + payload_len:
                raise FrameFileError(f"{path}: record at byte {offset} cut short")
            pub = _publication(path, offset, publish_ms, body[:topic_len], body[topic_len:])
            if pub.retain != bool(flags & _RETAIN):
                raise FrameFileError(
                    f"{path}: record at byte {offset}: retain flag does not "
                    f"match topic {pub.relative_topic}"
                )
            yield pub
            offset += _RECORD.size + topic_len + payload_len


def _publication(
    path: Path, offset: int, publish_ms: int, topic: bytes, payload: bytes
) -> Publication:
    parts = topic.decode("utf-8", "replace").split("/")
    if (
        len(parts) != 3
        or parts[0] != "kits"
        or not parts[1].isdigit()
        or parts[2] not in ("up", "status")
    ):
        raise FrameFileError(
            f"{path}: record at byte {offset}: topic {topic!r} is not kits/<kit_id>/<up|status>"
        )
    kind = Kind.FRAME if parts[2] == "up" else Kind.STATUS
    return Publication(publish_ms, int(parts[1]), kind, payload)
