"""The package keeps its contract: the public names other packages use, and no I/O."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import firmware_protocol
from firmware_protocol import (
    DecodedReadings,
    FrameHeader,
    RejectReason,
    StatusBits,
    StatusMessage,
)

PACKAGE = Path(firmware_protocol.__file__).parent
FORBIDDEN = {"socket", "asyncio", "paho", "ssl", "selectors", "threading", "psycopg", "faust"}


def test_sans_io() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_public_names() -> None:
    for name in (
        "encode_readings",
        "decode_readings",
        "peek_header",
        "encode_frame",
        "decode_frame",
        "frame_to_array",
        "array_to_frame",
        "encode_status",
        "decode_status",
        "Reading",
        "ReadingsFrame",
        "UnknownFrame",
        "MAX_READINGS_PER_FRAME",
        "MAX_FRAME_BYTES",
        "RemoteProtocolError",
        "LocalProtocolError",
        "ProtocolError",
        "READING_DTYPE",
        "empty_readings",
    ):
        assert name in firmware_protocol.__all__, name
        assert hasattr(firmware_protocol, name), name


def test_signatures() -> None:
    assert list(inspect.signature(firmware_protocol.encode_readings).parameters) == [
        "kit_id",
        "boot_id",
        "seq",
        "readings",
        "key",
    ]
    assert list(inspect.signature(firmware_protocol.decode_readings).parameters) == ["data", "key"]
    assert {"header", "readings"} <= set(DecodedReadings.__dataclass_fields__)
    assert {"version", "message_type", "kit_id", "boot_id", "seq", "count"} <= set(
        FrameHeader.__dataclass_fields__
    )
    assert {
        "battery_pct",
        "battery_v",
        "firmware_version",
        "uptime_s",
        "queue_depth",
        "ts_ms",
        "kit_id",
    } <= set(StatusMessage.__dataclass_fields__)


def test_reasons_and_bits() -> None:
    assert {r.value for r in RejectReason} >= {
        "truncated",
        "bad_magic",
        "unsupported_version",
        "unknown_message_type",
        "bad_length",
        "bad_checksum",
        "bad_mac",
        "unknown_kit",
        "too_many_readings",
        "bad_value",
    }
    assert {
        "WARMING_UP",
        "PM_FAULT",
        "NO2_FAULT",
        "NOISE_FAULT",
        "GNSS_FAULT",
        "LOW_BATTERY",
    } <= set(StatusBits.__members__)
