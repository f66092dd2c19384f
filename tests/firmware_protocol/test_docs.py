"""docs/protocol.md stays true: its worked example is the golden vector, its numbers the code's."""

from __future__ import annotations

import re
from pathlib import Path

from firmware_protocol import MAX_FRAME_BYTES, MAX_READINGS_PER_FRAME
from firmware_protocol.wire import FIELD_OFFSETS, RECORD_BYTES
from tests.firmware_protocol.protocol_vectors import load_vectors

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
EXAMPLE = next(v for v in load_vectors("readings") if v.name == "worked_example")


def test_worked_example_hex_is_the_vector() -> None:
    section = PAGE[PAGE.index("## 8. Worked example") : PAGE.index("## 9.")]
    block = re.search(r"The frame, 124 bytes.*?```\n(.*?)```", section, re.S)
    assert block is not None
    assert "".join(block.group(1).split()) == EXAMPLE.doc["frame_hex"]


def test_annotated_bytes_are_the_vector() -> None:
    frame = EXAMPLE.frame
    rows = re.findall(r"^ +(\d+)  ((?:[0-9a-f]{2} +)+)", PAGE, re.M)
    assert len(rows) > 30
    for offset, hex_bytes in rows:
        data = bytes.fromhex("".join(hex_bytes.split()))
        assert frame[int(offset) : int(offset) + len(data)] == data, offset


def test_record_table_offsets_are_the_code() -> None:
    table = re.findall(r"^\| (\d+) \| \d \| [ui]\d+ \| `(\w+)` \|", PAGE, re.M)
    offsets = {name: int(off) for off, name in table if name in FIELD_OFFSETS}
    assert offsets == FIELD_OFFSETS
    assert f"{RECORD_BYTES} bytes" in PAGE


def test_limits_are_the_code() -> None:
    assert f"{MAX_FRAME_BYTES:,} bytes" in PAGE
    assert f"**{MAX_READINGS_PER_FRAME}**" in PAGE
