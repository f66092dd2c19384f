"""The status / heartbeat message (docs/protocol.md §7): small, rare, JSON.

Unlike reading frames it is not authenticated: nothing in it becomes a
reading, it only feeds the fleet-health view, and JSON keeps it easy to read
off a broker by hand. Ingest still checks the kit id against the topic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from firmware_protocol.exceptions import RejectReason, RemoteProtocolError
from firmware_protocol.frames import StatusBits
from firmware_protocol.wire import MAX_STATUS, MAX_TS_MS, MAX_U32

#: Version of the status message, the "v" member.
STATUS_VERSION: Final = 1
#: Longer payloads are refused unparsed; a real one is about 200 bytes.
MAX_STATUS_BYTES: Final = 1024
MAX_FIRMWARE_VERSION_CHARS: Final = 32


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A kit's heartbeat. Field order follows the original contract; pass keywords."""

    battery_pct: float | None  # state of charge, 0..100 %
    battery_v: float | None  # battery voltage, V
    firmware_version: str  # e.g. "1.4.2", 1..32 printable ASCII characters
    uptime_s: int  # seconds since this boot
    queue_depth: int  # readings buffered on the kit, not yet acknowledged
    ts_ms: int  # kit clock when sent, Unix epoch ms
    kit_id: int
    boot_id: int | None = None  # the boot_id its reading frames carry
    status: StatusBits = StatusBits.NONE  # current device status bits


def encode_status(msg: StatusMessage) -> bytes:
    """Compact UTF-8 JSON; members in a fixed order so equal messages give equal bytes."""
    doc: dict[str, Any] = {
        "v": STATUS_VERSION,
        "kit_id": msg.kit_id,
        "boot_id": msg.boot_id,
        "ts_ms": msg.ts_ms,
        "battery_pct": msg.battery_pct,
        "battery_v": msg.battery_v,
        "firmware_version": msg.firmware_version,
        "uptime_s": msg.uptime_s,
        "queue_depth": msg.queue_depth,
        "status": int(msg.status),
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode_status(data: bytes) -> StatusMessage:
    """Parse and check a status message; RemoteProtocolError for anything we refuse."""
    if len(data) > MAX_STATUS_BYTES:
        raise RemoteProtocolError(
            RejectReason.BAD_LENGTH,
            MAX_STATUS_BYTES,
            f"status message of {len(data)} bytes; at most {MAX_STATUS_BYTES}",
        )
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(RejectReason.BAD_JSON, exc.start, "not UTF-8") from exc
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode())
        raise RemoteProtocolError(RejectReason.BAD_JSON, offset, exc.msg) from exc
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(RejectReason.BAD_JSON, None, str(exc)) from exc
    if not isinstance(doc, dict):
        raise RemoteProtocolError(RejectReason.BAD_JSON, 0, "a status message is a JSON object")
    return _Fields(raw, doc).message()


class _Fields:
    def __init__(self, raw: bytes, doc: dict[str, Any]) -> None:
        self.raw = raw
        self.doc = doc

    def message(self) -> StatusMessage:
        version = self.doc.get("v")
        if version != STATUS_VERSION:
            raise RemoteProtocolError(
                RejectReason.UNSUPPORTED_VERSION,
                self._where("v"),
                f"status version {version!r}; this decoder speaks 1",
            )
        kit_id = self._int("kit_id", MAX_U32)
        boot_id = self._int("boot_id", MAX_U32, optional=True)
        return StatusMessage(
            battery_pct=self._number("battery_pct", 100.0),
            battery_v=self._number("battery_v", 100.0),
            firmware_version=self._firmware_version(),
            uptime_s=self._required_int("uptime_s", MAX_U32),
            queue_depth=self._required_int("queue_depth", MAX_U32),
            ts_ms=self._required_int("ts_ms", MAX_TS_MS),
            kit_id=kit_id if kit_id is not None else self._missing("kit_id"),
            boot_id=boot_id,
            status=StatusBits(self._int("status", MAX_STATUS, optional=True) or 0),
        )

    def _where(self, name: str) -> int | None:
        at = self.raw.find(json.dumps(name).encode())
        return None if at < 0 else at

    def _bad(self, name: str, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(RejectReason.BAD_VALUE, self._where(name), f"{name}: {why}")

    def _missing(self, name: str) -> int:
        raise self._bad(name, "missing")

    def _required_int(self, name: str, hi: int) -> int:
        value = self._int(name, hi)
        return value if value is not None else self._missing(name)

    def _int(self, name: str, hi: int, *, optional: bool = False) -> int | None:
        value = self.doc.get(name)
        if value is None:
            if optional:
                return None
            raise self._bad(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
            raise self._bad(name, f"{value!r} is not an integer in 0..{hi}")
        return value

    def _number(self, name: str, hi: float) -> float | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= hi
        ):
            raise self._bad(name, f"{value!r} is not a number in 0..{hi:g}")
        return float(value)

    def _firmware_version(self) -> str:
        value = self.doc.get("firmware_version")
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= MAX_FIRMWARE_VERSION_CHARS
            or not (value.isascii() and value.isprintable())
        ):
            raise self._bad(
                "firmware_version", f"{value!r} is not 1..32 printable ASCII characters"
            )
        return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys: ambiguous, refuse.
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ValueError(f"member {name!r} appears twice")
        seen.add(name)
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
