"""Binary COPY encoding against an obvious field-by-field encoder, NULLs anywhere."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storage import copybin
from storage.copybin import Column, int4_array, scalar

HIST = 3
COLUMNS: tuple[Column, ...] = (
    scalar("a", "smallint"),
    scalar("b", "double precision"),
    int4_array("h", HIST),
    scalar("c", "bigint"),
    scalar("d", "real"),
)
_FORMATS = {"smallint": ">h", "double precision": ">d", "bigint": ">q", "real": ">f"}


def reference(values: dict[str, np.ndarray], nulls: dict[str, np.ndarray], n: int) -> bytes:
    """PostgreSQL's binary COPY format written out one field at a time."""
    out = bytearray(copybin.HEADER)
    for r in range(n):
        out += struct.pack(">h", len(COLUMNS))
        for col in COLUMNS:
            if nulls[col.name][r]:
                out += struct.pack(">i", -1)
            elif col.sql_type == "integer[]":
                body = struct.pack(">iiiii", 1, 0, 23, HIST, 1) + b"".join(
                    struct.pack(">ii", 4, int(x)) for x in values[col.name][r]
                )
                out += struct.pack(">i", len(body)) + body
            else:
                value = struct.pack(_FORMATS[col.sql_type], values[col.name][r].item())
                out += struct.pack(">i", len(value)) + value
    return bytes(out + copybin.TRAILER)


@st.composite
def tables(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    n = draw(st.integers(0, 40))
    values = {
        "a": draw(hnp.arrays(np.int16, n)),
        "b": draw(hnp.arrays(np.float64, n, elements=st.floats(allow_nan=False))),
        "h": draw(hnp.arrays(np.int32, (n, HIST))),
        "c": draw(hnp.arrays(np.int64, n)),
        "d": draw(hnp.arrays(np.float32, n, elements=st.floats(width=32, allow_nan=False))),
    }
    # Runs of one NULL pattern (the cheap way) or patterns changing on every row
    # (many runs: the byte mask), both from the same strategy.
    run = draw(st.integers(1, 8))
    nulls = {}
    for col in COLUMNS:
        pattern = draw(hnp.arrays(np.bool_, max(1, -(-n // run))))
        nulls[col.name] = np.repeat(pattern, run)[:n]
    return values, nulls, n


# NULLs are cut run by run or with one byte mask, whichever costs less: force each.
@pytest.mark.parametrize("run_cost_bytes", [0, 10**9], ids=["runs", "byte-mask"])
@settings(max_examples=100, deadline=None)
@given(table=tables())
def test_encode_writes_what_postgresql_reads(
    table: tuple[dict[str, np.ndarray], dict[str, np.ndarray], int], run_cost_bytes: int
) -> None:
    values, nulls, n = table
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(copybin, "_RUN_COST_BYTES", run_cost_bytes)
        encoded = copybin.encode(COLUMNS, values, n, nulls)
    assert encoded == reference(values, nulls, n)


def test_many_short_runs_and_few_long_ones_encode_alike() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    values: dict[str, np.ndarray] = {
        "a": rng.integers(-9, 9, n).astype(np.int16),
        "b": rng.normal(size=n),
        "h": rng.integers(0, 99, (n, HIST)).astype(np.int32),
        "c": rng.integers(0, 2**40, n),
        "d": rng.normal(size=n).astype(np.float32),
    }
    alternating = {c.name: (np.arange(n) + i) % 2 == 0 for i, c in enumerate(COLUMNS)}
    assert copybin.encode(COLUMNS, values, n, alternating) == reference(values, alternating, n)
    blocks = {name: np.sort(mask) for name, mask in alternating.items()}
    assert copybin.encode(COLUMNS, values, n, blocks) == reference(values, blocks, n)
