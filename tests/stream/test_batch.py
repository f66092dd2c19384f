"""Enriched rows: the first row of each key, sorted by key, against the obvious way."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocol.readings import READING_DTYPE
from stream.core.batch import ENRICHED_DTYPE, enrich, first_by_key, pack_keys, sort_keys
from tests.stream.stream_factories import riding

IDENTITY = ("kit_id", "boot_id", "seq", "idx")


def obvious_first_by_key(rows: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    first: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(rows):
        first.setdefault(tuple(int(row[f]) for f in fields), i)
    return rows[[first[k] for k in sorted(first)]]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    spread=st.sampled_from([2, 50, 2**32 - 1]),
    fields=st.sampled_from(
        [
            IDENTITY,
            ("kit_id", "boot_id", "seq", "ts_ms", "idx"),  # a signed field between
            ("idx", "kit_id", "status", "boot_id"),  # 16 + 32 + 16 bits, then 32
            ("ride_id", "kit_id"),
        ]
    ),
)
def test_first_by_key_keeps_the_first_row_of_each_key_in_key_order(
    seed: int, n: int, spread: int, fields: tuple[str, ...]
) -> None:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=ENRICHED_DTYPE)
    for name in ENRICHED_DTYPE.names or ():
        kind = rows[name].dtype
        if kind.kind in "ui":
            info = np.iinfo(kind)
            # Few distinct values (repeated keys) or the whole range (the top bits too).
            low = max(int(info.min), -spread)
            high = min(int(info.max), spread)
            rows[name] = rng.integers(low, high, n, endpoint=True)
        else:
            rows[name] = rng.normal(size=n)
    got = first_by_key(rows, fields)
    assert got.tobytes() == obvious_first_by_key(rows, fields).tobytes()


def test_sort_keys_pack_the_reading_identity_into_two_keys() -> None:
    rows = np.zeros(3, dtype=ENRICHED_DTYPE)
    rows["kit_id"] = [2**32 - 1, 1, 1]
    rows["boot_id"] = [0, 2**32 - 1, 2**32 - 1]
    rows["seq"] = [5, 2**32 - 1, 0]
    rows["idx"] = [0, 0, 2**16 - 1]
    keys = sort_keys(rows, IDENTITY)
    assert len(keys) == 2
    assert np.lexsort(keys[::-1]).tolist() == [2, 1, 0]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 200),
    dtypes=st.lists(
        st.sampled_from(["?", "i1", "u1", "i2", "u4", "i4", "i8", "u8", "f8"]),
        min_size=1,
        max_size=6,
    ),
)
def test_packed_keys_sort_and_compare_as_the_columns_do(
    seed: int, n: int, dtypes: list[str]
) -> None:
    rng = np.random.default_rng(seed)
    columns = []
    for dtype in dtypes:
        # Extremes and repeats: the sign bit, the top bits, ties broken by the next column.
        pool = rng.integers(0, 256, (4, np.dtype(dtype).itemsize), dtype=np.uint8)
        column = pool[rng.integers(0, 4, n)].view(dtype).ravel()
        if dtype == "?":
            column = rng.random(n) < 0.5
        elif dtype == "f8":
            column = rng.normal(size=n)
        columns.append(column)
    keys = pack_keys(columns)
    assert np.lexsort(keys[::-1]).tolist() == np.lexsort(columns[::-1]).tolist()
    equal = np.ones(n - 1, dtype=bool)
    for column in columns:
        equal &= column[1:] == column[:-1]
    packed_equal = np.ones(n - 1, dtype=bool)
    for key in keys:
        packed_equal &= key[1:] == key[:-1]
    np.testing.assert_array_equal(packed_equal, equal)


def test_enrich_copies_every_field_of_contiguous_and_strided_readings() -> None:
    readings = riding(50, seed=4)
    readings["lat_deg"][::3] = np.nan
    readings["satellites"][::5] = -1
    for part in (readings, readings[::2], readings[:0]):
        out = enrich(part, received_ms=123)
        for name in READING_DTYPE.names or ():
            assert out[name].tobytes() == part[name].tobytes(), name
        assert (out["received_ms"] == 123).all()
        for name in ("qa_flags", "cell", "ride_id"):
            assert not out[name].any()
