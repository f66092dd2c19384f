"""Golden test vectors: what they contain, how to read them, how they were made.

``tests/vectors/*.json`` holds one frame per file, in three kinds:

* ``readings`` -- a valid readings frame: key, frame bytes, header, base
  timestamp, the readings in physical units (``null`` = no value) and the
  same readings in wire units (``wire``: the integers of the C ``bs_reading``);
* ``unknown`` -- a valid frame of a message type v1 does not define;
* ``reject`` -- bytes a decoder must refuse, with the reason and byte offset.

The frames were made by :func:`spec_frame`, an encoder written from
``docs/protocol.md`` with ``struct``, ``zlib`` and ``hmac`` and nothing from
``firmware_protocol``, so the codec is checked against the page, not against
itself. Regenerate (and review the diff!) with::

    .venv/bin/python -m tests.firmware_protocol.protocol_vectors --write
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"

# Written out from docs/protocol.md §3-§5, deliberately not imported from the codec.
HEADER = struct.Struct("<2sBBHHIII")
RECORD = struct.Struct("<IiiHHHHHHHHHhHHBB")
WIRE_FIELDS = (
    "ts_ms",
    "lat_e7",
    "lon_e7",
    "hdop_x100",
    "speed_cm_s",
    "pm1_x10",
    "pm25_x10",
    "pm10_x10",
    "no2_x10",
    "laeq_x10",
    "lamax_x10",
    "interval_ms",
    "temp_x100",
    "rh_x10",
    "status",
    "gnss_fix",
    "satellites",
)
# physical name, wire name, scale, absent
SCALED = (
    ("lat_deg", "lat_e7", 10_000_000, -0x8000_0000),
    ("lon_deg", "lon_e7", 10_000_000, -0x8000_0000),
    ("hdop", "hdop_x100", 100, 0xFFFF),
    ("speed_mps", "speed_cm_s", 100, 0xFFFF),
    ("pm1_ugm3", "pm1_x10", 10, 0xFFFF),
    ("pm25_ugm3", "pm25_x10", 10, 0xFFFF),
    ("pm10_ugm3", "pm10_x10", 10, 0xFFFF),
    ("no2_ugm3", "no2_x10", 10, 0xFFFF),
    ("noise_laeq_db", "laeq_x10", 10, 0xFFFF),
    ("noise_lamax_db", "lamax_x10", 10, 0xFFFF),
    ("temperature_c", "temp_x100", 100, -0x8000),
    ("humidity_pct", "rh_x10", 10, 0xFFFF),
)
KEY = bytes(range(32))  # 000102..1f: the key of every vector unless stated
OTHER_KEY = hashlib.sha256(b"bikesense test vector: some other kit").digest()
MAX_TS_MS = 2**53 - 1


class Ids(TypedDict):
    kit_id: int
    boot_id: int
    seq: int


@dataclass(frozen=True)
class Vector:
    name: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.doc["key_hex"])

    @property
    def frame(self) -> bytes:
        return bytes.fromhex(self.doc["frame_hex"])


def load_vectors(kind: str | None = None) -> list[Vector]:
    out = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        if kind is None or doc["kind"] == kind:
            out.append(Vector(path.stem, doc))
    return out


def absent_wire(ts_ms: int) -> dict[str, int]:
    """A reading in wire units with every sensor absent."""
    wire = {name: absent for _, name, _, absent in SCALED}
    wire.update(ts_ms=ts_ms, interval_ms=0, status=0, gnss_fix=0, satellites=0xFF)
    return wire


def physical(wire: dict[str, int]) -> dict[str, Any]:
    """Wire units to the physical units of the JSON ``readings`` (and of Reading)."""
    out: dict[str, Any] = {"ts_ms": wire["ts_ms"]}
    for name, wire_name, scale, absent in SCALED:
        raw = wire[wire_name]
        out[name] = None if raw == absent else raw / scale
    out["gnss_fix"] = wire["gnss_fix"]
    out["satellites"] = None if wire["satellites"] == 0xFF else wire["satellites"]
    out["interval_ms"] = wire["interval_ms"]
    out["status"] = wire["status"]
    return out


def spec_frame(
    readings: list[dict[str, int]],
    *,
    kit_id: int,
    boot_id: int,
    seq: int,
    key: bytes = KEY,
    message_type: int = 1,
    version: int = 1,
    count: int | None = None,
    frame_len: int | None = None,
    base_ts: int | None = None,
    body: bytes | None = None,
) -> bytes:
    """A frame built straight from the spec; the keyword overrides craft bad ones."""
    if body is None:
        base = min(r["ts_ms"] for r in readings) if base_ts is None else base_ts
        body = struct.pack("<Q", base) + b"".join(
            RECORD.pack(*[r["ts_ms"] - base if f == "ts_ms" else r[f] for f in WIRE_FIELDS])
            for r in readings
        )
    size = 20 + len(body) + 4 + 16
    head = HEADER.pack(
        b"BS",
        version,
        message_type,
        size if frame_len is None else frame_len,
        len(readings) if count is None else count,
        kit_id,
        boot_id,
        seq,
    )
    unsealed = head + body
    with_crc = unsealed + struct.pack("<I", zlib.crc32(unsealed))
    return with_crc + hmac.digest(key, with_crc, "sha256")[:16]


# ---------------------------------------------------------------- the vectors

AMSTERDAM_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _worked_example() -> list[dict[str, int]]:
    first = {
        "ts_ms": AMSTERDAM_TS,
        "lat_e7": 523_702_157,
        "lon_e7": 48_951_679,
        "hdop_x100": 90,
        "speed_cm_s": 417,
        "pm1_x10": 52,
        "pm25_x10": 81,
        "pm10_x10": 124,
        "no2_x10": 0xFFFF,
        "laeq_x10": 623,
        "lamax_x10": 718,
        "interval_ms": 1000,
        "temp_x100": -125,
        "rh_x10": 815,
        "status": 0,
        "gnss_fix": 2,
        "satellites": 11,
    }
    # One second later the PM sensor faults and GNSS drops to a 2-D fix.
    second = dict(
        first,
        ts_ms=AMSTERDAM_TS + 1000,
        lat_e7=523_702_411,
        lon_e7=48_952_207,
        hdop_x100=250,
        speed_cm_s=388,
        pm1_x10=0xFFFF,
        pm25_x10=0xFFFF,
        pm10_x10=0xFFFF,
        laeq_x10=655,
        lamax_x10=742,
        gnss_fix=1,
        satellites=4,
        status=0b10,
    )
    return [first, second]


def _max_wire(ts_ms: int) -> dict[str, int]:
    return {
        "ts_ms": ts_ms,
        "lat_e7": 900_000_000,
        "lon_e7": 1_800_000_000,
        "hdop_x100": 0xFFFE,
        "speed_cm_s": 0xFFFE,
        "pm1_x10": 0xFFFE,
        "pm25_x10": 0xFFFE,
        "pm10_x10": 0xFFFE,
        "no2_x10": 0xFFFE,
        "laeq_x10": 0xFFFE,
        "lamax_x10": 0xFFFE,
        "interval_ms": 0xFFFF,
        "temp_x100": 0x7FFF,
        "rh_x10": 1000,
        "status": 0xFFFF,
        "gnss_fix": 2,
        "satellites": 127,
    }


def _min_wire(ts_ms: int) -> dict[str, int]:
    wire = dict.fromkeys(WIRE_FIELDS, 0)
    wire.update(ts_ms=ts_ms, lat_e7=-900_000_000, lon_e7=-1_800_000_000, temp_x100=-0x7FFF)
    return wire


def _ride(n: int, seed: int) -> list[dict[str, int]]:
    """A plausible ride, deterministic, with gaps and every kind of absence."""
    rng = random.Random(seed)
    out = []
    ts, lat, lon = AMSTERDAM_TS + 3_600_000, 523_600_000, 48_900_000
    for _ in range(n):
        ts += rng.choice((1000, 1000, 1000, 998, 1003, 60_000))
        lat += rng.randint(-400, 400)
        lon += rng.randint(-600, 600)
        wire = {
            "ts_ms": ts,
            "lat_e7": lat,
            "lon_e7": lon,
            "hdop_x100": rng.randint(60, 400),
            "speed_cm_s": rng.randint(0, 900),
            "pm1_x10": rng.randint(0, 300),
            "pm25_x10": rng.randint(0, 600),
            "pm10_x10": rng.randint(0, 1200),
            "no2_x10": rng.choice((0xFFFF, rng.randint(0, 1500))),
            "laeq_x10": rng.randint(450, 950),
            "lamax_x10": rng.randint(500, 1100),
            "interval_ms": 1000,
            "temp_x100": rng.randint(-1500, 3500),
            "rh_x10": rng.randint(200, 1000),
            "status": rng.choice((0, 0, 0, 1, 32, 2)),
            "gnss_fix": rng.choice((2, 2, 2, 1)),
            "satellites": rng.randint(4, 30),
        }
        if rng.random() < 0.05:  # in a tunnel
            wire.update(
                lat_e7=-0x8000_0000,
                lon_e7=-0x8000_0000,
                gnss_fix=0,
                satellites=0xFF,
                hdop_x100=0xFFFF,
                speed_cm_s=0xFFFF,
            )
        if rng.random() < 0.03:  # a PM fault
            wire.update(pm1_x10=0xFFFF, pm25_x10=0xFFFF, pm10_x10=0xFFFF, status=wire["status"] | 2)
        out.append(wire)
    return out


ReadingsCase = tuple[str, str, Ids, list[dict[str, int]]]


def readings_cases() -> Iterator[ReadingsCase]:
    ids: Ids = {"kit_id": 4711, "boot_id": 3, "seq": 17}
    yield (
        "worked_example",
        "docs/protocol.md §8: two readings, NO2 absent, then a PM fault",
        ids,
        _worked_example(),
    )
    yield (
        "single_all_absent",
        "one reading with every sensor absent and no fix",
        {"kit_id": 1, "boot_id": 1, "seq": 0},
        [absent_wire(AMSTERDAM_TS)],
    )
    yield (
        "extremes_max",
        "largest valid value in every field; span 2^32-1 ms ending at 2^53-1",
        {"kit_id": 0xFFFF_FFFF, "boot_id": 0xFFFF_FFFF, "seq": 0xFFFF_FFFF},
        [_max_wire(MAX_TS_MS - (2**32 - 1)), _max_wire(MAX_TS_MS)],
    )
    yield (
        "extremes_min",
        "smallest valid value in every field, at the epoch",
        {"kit_id": 0, "boot_id": 0, "seq": 0},
        [_min_wire(0), _min_wire(0)],
    )
    unsorted = [absent_wire(AMSTERDAM_TS + dt) for dt in (5000, 0, 5000, 2500)]
    yield (
        "unsorted_timestamps",
        "timestamps need not be sorted or distinct; base is the oldest",
        ids,
        unsorted,
    )
    bits = [dict(absent_wire(AMSTERDAM_TS + i), status=1 << i) for i in range(16)]
    yield ("status_bits", "each of the 16 status bits alone, reserved ones included", ids, bits)
    yield ("ride_64", "a minute of riding, with a tunnel and a PM fault", ids, _ride(64, 1))
    yield (
        "max_readings",
        "MAX_READINGS_PER_FRAME = 1024 readings, the largest frame",
        ids,
        _ride(1024, 2),
    )


def reject_cases() -> Iterator[tuple[str, str, bytes, bytes, str, int | None]]:
    """name, description, key, frame, reason, offset."""
    ids: Ids = {"kit_id": 4711, "boot_id": 3, "seq": 17}
    example = _worked_example()
    good = spec_frame(example, **ids)
    crc_at = len(good) - 20

    yield "reject_bad_magic", "not a bikesense frame", KEY, b"XS" + good[2:], "bad_magic", 0
    yield (
        "reject_unsupported_version",
        "a version 2 frame reaches a v1 decoder",
        KEY,
        spec_frame(example, version=2, **ids),
        "unsupported_version",
        2,
    )
    yield (
        "reject_truncated",
        "the last byte is missing",
        KEY,
        good[:-1],
        "truncated",
        len(good) - 1,
    )
    yield (
        "reject_truncated_header",
        "eleven bytes: not even a header",
        KEY,
        good[:11],
        "truncated",
        11,
    )
    yield (
        "reject_trailing_byte",
        "one byte after the end of the frame",
        KEY,
        good + b"\0",
        "bad_length",
        len(good),
    )
    yield (
        "reject_frame_len_too_small",
        "frame length field below the 40-byte minimum",
        KEY,
        good[:4] + struct.pack("<H", 39) + good[6:],
        "bad_length",
        4,
    )
    flipped = bytearray(good)
    flipped[28 + 38 + 19] ^= 0x01  # a bit of the second reading's PM2.5
    yield (
        "reject_bad_checksum",
        "one bit flipped in transit",
        KEY,
        bytes(flipped),
        "bad_checksum",
        crc_at,
    )
    yield (
        "reject_bad_mac",
        "sealed with another kit's key",
        KEY,
        spec_frame(example, key=OTHER_KEY, **ids),
        "bad_mac",
        len(good) - 16,
    )
    yield (
        "reject_count_mismatch",
        "count says 3 readings, the frame holds 2 (MAC valid)",
        KEY,
        spec_frame(example, count=3, **ids),
        "bad_length",
        4,
    )
    yield (
        "reject_too_many_readings",
        "count 65535 in a small, authentic frame",
        KEY,
        spec_frame(example, count=0xFFFF, **ids),
        "too_many_readings",
        6,
    )
    yield (
        "reject_empty_batch",
        "count 0, no records (MAC valid)",
        KEY,
        spec_frame([], count=0, body=struct.pack("<Q", AMSTERDAM_TS), **ids),
        "bad_value",
        6,
    )

    def bad_second(
        field: str, value: int, why: str, name: str, offset_in_record: int
    ) -> tuple[str, str, bytes, bytes, str, int]:
        readings = [example[0], dict(example[1], **{field: value})]
        return (
            name,
            why,
            KEY,
            spec_frame(readings, **ids),
            "bad_value",
            28 + 38 + offset_in_record,
        )

    yield bad_second(
        "lat_e7", 900_000_001, "latitude 90.0000001° (MAC valid)", "reject_latitude", 4
    )
    yield bad_second(
        "lon_e7", -1_800_000_001, "longitude -180.0000001° (MAC valid)", "reject_longitude", 8
    )
    yield bad_second(
        "lon_e7", -0x8000_0000, "longitude absent, latitude present", "reject_half_position", 4
    )
    yield bad_second("gnss_fix", 3, "gnss_fix 3 is not defined in v1", "reject_gnss_fix", 36)
    yield bad_second(
        "satellites", 128, "128 satellites: above 127, not 255", "reject_satellites", 37
    )
    yield bad_second("rh_x10", 1001, "relative humidity 100.1 %", "reject_humidity", 32)
    over = [dict(example[0], ts_ms=MAX_TS_MS), dict(example[1], ts_ms=MAX_TS_MS + 1)]
    yield (
        "reject_timestamp_overflow",
        "base 2^53-1 plus 1 ms",
        KEY,
        spec_frame(over, base_ts=MAX_TS_MS, **ids),
        "bad_value",
        28 + 38,
    )
    yield (
        "reject_base_not_oldest",
        "base timestamp 1 ms older than every reading",
        KEY,
        spec_frame(example, base_ts=AMSTERDAM_TS - 1, **ids),
        "bad_value",
        20,
    )
    yield (
        "reject_base_timestamp",
        "base timestamp 2^53",
        KEY,
        spec_frame([dict(example[0], ts_ms=2**53)], **ids),
        "bad_value",
        20,
    )


def build() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for name, description, ids, readings in readings_cases():
        frame = spec_frame(readings, **ids)
        docs[name] = {
            "kind": "readings",
            "description": description,
            "key_hex": KEY.hex(),
            "frame_hex": frame.hex(),
            "header": {
                "version": 1,
                "message_type": 1,
                "frame_len": len(frame),
                "count": len(readings),
                **ids,
            },
            "base_ts_ms": min(r["ts_ms"] for r in readings),
            "readings": [physical(r) for r in readings],
            "wire": readings,
        }
    body = b"a future message type"
    unknown_ids: Ids = {"kit_id": 4711, "boot_id": 3, "seq": 18}
    frame = spec_frame([], message_type=0x7F, count=5, body=body, **unknown_ids)
    docs["unknown_message_type"] = {
        "kind": "unknown",
        "description": "an authentic frame of message type 127: UnknownFrame, not an error",
        "key_hex": KEY.hex(),
        "frame_hex": frame.hex(),
        "header": {
            "version": 1,
            "message_type": 0x7F,
            "frame_len": len(frame),
            "count": 5,
            **unknown_ids,
        },
        "body_hex": body.hex(),
    }
    for name, description, key, frame, reason, offset in reject_cases():
        docs[name] = {
            "kind": "reject",
            "description": description,
            "key_hex": key.hex(),
            "frame_hex": frame.hex(),
            "error": {"reason": reason, "offset": offset},
        }
    return docs


def render(doc: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON: one reading per line."""
    lines = ["{"]
    items = list(doc.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list):
            rows = [f"    {json.dumps(row)}" for row in value]
            body = ",\n".join(rows)
            lines.append(f'  "{key}": [\n{body}\n  ]{comma}' if rows else f'  "{key}": []{comma}')
        else:
            lines.append(f'  "{key}": {json.dumps(value)}{comma}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write tests/vectors/*.json")
    args = parser.parse_args()
    stale = []
    for name, doc in build().items():
        path = VECTORS_DIR / f"{name}.json"
        text = render(doc)
        if args.write:
            VECTORS_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(path.name)
    if stale:
        raise SystemExit(f"vectors differ from the generator: {', '.join(stale)}")


if __name__ == "__main__":
    main()
