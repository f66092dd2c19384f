"""The C reference encoder, compiled with the system compiler, against the golden vectors."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.firmware_protocol.protocol_vectors import (
    KEY,
    WIRE_FIELDS,
    Vector,
    absent_wire,
    load_vectors,
)

HEADER_DIR = Path(__file__).resolve().parents[2] / "firmware_protocol" / "c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
STRICT = [
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-Wconversion",
    "-Wsign-conversion",
    "-Wshadow",
    "-Wcast-align",
    "-Wstrict-prototypes",
]

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on PATH")

READINGS = load_vectors("readings")
AMS = 1_767_225_600_000

# Inputs the encoder must refuse, with the result code it must return.
INVALID: list[tuple[str, str, int]] = [
    ("latitude", "lat_e7 = 900000001", -5),
    ("longitude", "lon_e7 = -1800000001", -5),
    ("half_position", "lon_e7 = BS_ABSENT_I32", -5),
    ("gnss_fix", "gnss_fix = 3", -5),
    ("satellites", "satellites = 128", -5),
    ("humidity", "rh_x10 = 1001", -5),
    ("timestamp", "ts_ms = BS_MAX_TS_MS + 1", -3),
    ("span", f"ts_ms = {AMS} + BS_MAX_SPAN_MS + 1", -4),
]


def _c_reading(wire: dict[str, int]) -> str:
    values = []
    for name in WIRE_FIELDS:
        value = wire[name]
        if name == "ts_ms":
            values.append(f".ts_ms = {value}ull")
        elif name in ("lat_e7", "lon_e7") and value == -0x8000_0000:
            values.append(f".{name} = BS_ABSENT_I32")
        elif name == "temp_x100" and value == -0x8000:
            values.append(f".{name} = BS_ABSENT_I16")
        else:
            values.append(f".{name} = {value}")
    return "{" + ", ".join(values) + "}"


def _c_bytes(data: bytes) -> str:
    return "{" + ", ".join(str(b) for b in data) + "}"


def _program(vectors: list[Vector]) -> str:
    parts = [
        "#define BIKESENSE_FRAME_IMPLEMENTATION",
        '#include "bikesense_frame.h"',
        '#include "bikesense_frame.h" /* twice: the guard must hold */',
        "#include <stdio.h>",
        "",
        "static uint8_t frame[BS_MAX_FRAME_BYTES];",
        "",
        "static void print_hex(const char *name, const uint8_t *p, size_t n) {",
        "    size_t i;",
        '    printf("%s ", name);',
        "    for (i = 0; i < n; i++) {",
        '        printf("%02x", p[i]);',
        "    }",
        '    printf("\\n");',
        "}",
        "",
    ]
    calls = []
    for i, v in enumerate(vectors):
        h = v.doc["header"]
        rows = ",\n    ".join(_c_reading(r) for r in v.doc["wire"])
        parts += [
            f"static const bs_reading readings_{i}[] = {{\n    {rows}\n}};",
            f"static const uint8_t key_{i}[BS_KEY_BYTES] = {_c_bytes(v.key)};",
        ]
        calls.append(
            f"    rc = bs_encode_readings(frame, sizeof frame, {h['kit_id']}u, {h['boot_id']}u, "
            f"{h['seq']}u, readings_{i}, {len(v.doc['wire'])}u, key_{i}, &len, NULL);\n"
            f'    if (rc != BS_OK) {{ printf("{v.name} error %d\\n", (int)rc); }}\n'
            f'    else {{ print_hex("{v.name}", frame, len); }}'
        )
    good = {**absent_wire(AMS), "lat_e7": 523_702_157, "lon_e7": 48_951_679}
    parts.append(f"static const bs_reading good = {_c_reading(good)};")
    parts.append(f"static const uint8_t key[BS_KEY_BYTES] = {_c_bytes(KEY)};")
    parts.append('static const uint8_t msg[] = "what do ya want for nothing?";')
    parts += [
        "",
        "int main(void) {",
        "    size_t len = 0, bad_index = 0;",
        "    bs_result rc;",
        "    bs_reading two[2];",
        "    uint8_t digest[32];",
    ]
    parts += calls
    for name, assignment, _ in INVALID:
        parts += [
            "    two[0] = good;",
            "    two[1] = good;",
            f"    two[1].{assignment};",
            "    rc = bs_encode_readings(frame, sizeof frame, 1u, 1u, 1u, two, 2u, key, &len, "
            "&bad_index);",
            f'    printf("invalid_{name} %d %d\\n", (int)rc, (int)bad_index);',
        ]
    parts += [
        "    rc = bs_encode_readings(frame, sizeof frame, 1u, 1u, 1u, two, 0u, key, &len, NULL);",
        '    printf("count_zero %d\\n", (int)rc);',
        "    rc = bs_encode_readings(frame, sizeof frame, 1u, 1u, 1u, two, BS_MAX_READINGS + 1u,"
        " key, &len, NULL);",
        '    printf("count_over %d\\n", (int)rc);',
        "    rc = bs_encode_readings(frame, BS_FRAME_BYTES(1) - 1u, 1u, 1u, 1u, &good, 1u, key,"
        " &len, NULL);",
        '    printf("small_buffer %d\\n", (int)rc);',
        "    bs_sha256(msg, sizeof msg - 1u, digest);",
        '    print_hex("sha256", digest, 32);',
        "    bs_hmac_sha256(key, msg, sizeof msg - 1u, digest);",
        '    print_hex("hmac", digest, 32);',
        '    printf("crc32 %08lx\\n", (unsigned long)bs_crc32(msg, sizeof msg - 1u));',
        "    return 0;",
        "}",
    ]
    return "\n".join(parts) + "\n"


def _build_and_run(work: Path, name: str, flags: list[str]) -> subprocess.CompletedProcess[str]:
    assert CC is not None
    source = work / "vectors_main.c"
    if not source.exists():
        source.write_text(_program(READINGS))
    binary = work / name
    compiled = subprocess.run(
        [CC, *STRICT, *flags, "-I", str(HEADER_DIR), str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if compiled.returncode != 0:
        return compiled
    return subprocess.run([str(binary)], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def c_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("c_encoder")


@pytest.fixture(scope="module")
def c_stdout(c_work: Path) -> str:
    ran = _build_and_run(c_work, "vectors_o2", ["-O2"])
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


@pytest.fixture(scope="module")
def c_output(c_stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in c_stdout.splitlines())


def test_no_undefined_behaviour_or_memory_errors(c_work: Path, c_stdout: str) -> None:
    """Same program under AddressSanitizer and UBSan: same output, no report."""
    ran = _build_and_run(
        c_work,
        "vectors_sanitized",
        ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    )
    if ran.returncode != 0 and "cannot find" in ran.stderr:
        pytest.skip(f"the C toolchain has no sanitizer runtime: {ran.stderr.strip()[:200]}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == c_stdout


@pytest.mark.parametrize("v", READINGS, ids=[v.name for v in READINGS])
def test_c_encoder_matches_the_vector(c_output: dict[str, str], v: Vector) -> None:
    assert c_output[v.name] == v.doc["frame_hex"]


@pytest.mark.parametrize(("name", "code"), [(n, c) for n, _, c in INVALID])
def test_c_encoder_refuses_bad_readings(c_output: dict[str, str], name: str, code: int) -> None:
    assert c_output[f"invalid_{name}"] == f"{code} 1"  # code, index of the bad reading


def test_c_encoder_refuses_bad_batches(c_output: dict[str, str]) -> None:
    assert c_output["count_zero"] == "-1"
    assert c_output["count_over"] == "-1"
    assert c_output["small_buffer"] == "-2"


def test_c_building_blocks(c_output: dict[str, str]) -> None:
    msg = b"what do ya want for nothing?"
    assert c_output["sha256"] == hashlib.sha256(msg).hexdigest()
    assert c_output["hmac"] == hmac.digest(KEY, msg, "sha256").hex()
    assert c_output["crc32"] == f"{zlib.crc32(msg):08x}"


def test_header_compiles_as_plain_c99_without_the_implementation(tmp_path: Path) -> None:
    assert CC is not None
    source = tmp_path / "user.c"
    source.write_text(
        '#include "bikesense_frame.h"\n'
        "size_t frame_size(void);\n"
        "size_t frame_size(void) { return BS_FRAME_BYTES(60); }\n"
    )
    compiled = subprocess.run(
        [CC, *STRICT, "-c", "-I", str(HEADER_DIR), str(source), "-o", str(tmp_path / "user.o")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert compiled.returncode == 0, compiled.stderr
