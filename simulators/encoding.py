"""Frames many at a time through the protocol package, byte for byte as ``encode_readings``.

``encode_readings`` pays numpy's fixed cost per call (a few dozen column
operations), which made the simulator spend most of its time encoding ten
readings at a time. Here a block of up to MAX_READINGS_PER_FRAME readings goes
through the protocol's record encoder once, and each frame is a slice of those
records, rebased on its own first timestamp and sealed by the protocol's
envelope code.

That reaches below the protocol's public API, so it checks itself: at start-up
it encodes a sample both ways and uses the fast path only if the bytes are
identical; otherwise (or if the internals moved) every frame goes through
``encode_readings``. Either way the bytes are the protocol's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from firmware_protocol.arrays import encode_readings
from firmware_protocol.readings import empty_readings
from firmware_protocol.wire import MessageType

_array_to_records: Callable[..., Any] | None
_records_body: Callable[..., Any] | None
_seal_frame: Callable[..., Any] | None
try:
    from firmware_protocol.envelope import seal_frame as _seal_frame
    from firmware_protocol.records import array_to_records as _array_to_records
    from firmware_protocol.records import records_body as _records_body
except ImportError:  # pragma: no cover - only if the protocol's internals move
    _array_to_records = _records_body = _seal_frame = None


class EncodedBlock:
    """Consecutive readings of one kit and boot, ready to be cut into frames."""

    def __init__(self, readings: np.ndarray, *, fast: bool) -> None:
        self.readings = readings
        self.boot_id = int(readings["boot_id"][0])
        self._fast = fast
        if fast:
            assert _array_to_records is not None
            self._base_ts, self._records = _array_to_records(readings)
            self._ts_ms = readings["ts_ms"].astype(np.int64)

    def __len__(self) -> int:
        return len(self.readings)

    def frame(
        self, start: int, stop: int, *, kit_id: int, boot_id: int, seq: int, key: bytes
    ) -> bytes:
        """Readings ``start:stop`` as one authenticated frame."""
        if not self._fast:
            return encode_readings(kit_id, boot_id, seq, self.readings[start:stop], key)
        assert _seal_frame is not None
        assert _records_body is not None
        records = self._records[start:stop].copy()
        base = int(self._ts_ms[start:stop].min())
        records["dt_ms"] -= base - self._base_ts
        payload: bytes = _seal_frame(
            MessageType.READINGS,
            _records_body(base, records),
            key,
            count=stop - start,
            kit_id=kit_id,
            boot_id=boot_id,
            seq=seq,
        )
        return payload


class FrameEncoder:
    """Makes :class:`EncodedBlock` objects, on the fast path when it proves identical."""

    def __init__(self) -> None:
        self.fast = _fast_path_matches()

    def block(self, readings: np.ndarray) -> EncodedBlock:
        return EncodedBlock(readings, fast=self.fast)


def _fast_path_matches() -> bool:
    if _array_to_records is None:
        return False
    sample = empty_readings(5)
    sample["ts_ms"] = 1_781_506_800_000 + np.array([4000, 0, 9000, 13000, 17000])
    sample["pm25_ugm3"] = [1.0, 2.5, np.nan, 40.0, 7.7]
    sample["lat_deg"], sample["lon_deg"] = 52.129, 4.656
    sample["boot_id"] = 7
    key = bytes(range(32))
    try:
        block = EncodedBlock(sample, fast=True)
        return all(
            block.frame(a, b, kit_id=3, boot_id=7, seq=a, key=key)
            == encode_readings(3, 7, a, sample[a:b], key)
            for a, b in ((0, 5), (1, 3), (2, 5), (4, 5))
        )
    except (TypeError, ValueError, AttributeError, KeyError):
        return False
