"""PostgreSQL binary COPY, encoded and decoded with numpy: no Python work per row.

Binary COPY is a header, then per row a field count and, per field, a length and
the value in network byte order, then a trailer (PostgreSQL docs, "COPY", section
"Binary Format"). When every field has a fixed width and is never NULL, every row
has the same layout, so a whole batch is one numpy structured array: one
``tobytes()`` out, one ``frombuffer()`` in. Absent values travel as NaN or a
sentinel and become NULL in SQL (``NULLIF``), never as NULL fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
#: Signature, flags field (0: no OIDs), header extension length (0).
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

#: Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 UTC.
PG_EPOCH_OFFSET_US = 946_684_800_000_000

_INT4_OID = 23
_ARRAY_HEADER_WORDS = 5  # ndim, has-null flag, element type, dimension, lower bound


@dataclass(frozen=True, slots=True)
class Column:
    """One fixed-width column: its SQL type and its big-endian wire dtype."""

    name: str
    sql_type: str
    wire: np.dtype[np.void] | np.dtype[np.generic]

    @property
    def width(self) -> int:
        return int(self.wire.itemsize)


def scalar(name: str, sql_type: str) -> Column:
    wire = {
        "smallint": ">i2",
        "integer": ">i4",
        "bigint": ">i8",
        "real": ">f4",
        "double precision": ">f8",
        "timestamptz": ">i8",  # microseconds since 2000-01-01 UTC
    }[sql_type]
    return Column(name, sql_type, np.dtype(wire))


def int4_array(name: str, length: int) -> Column:
    """A one-dimensional ``integer[]`` of a fixed length without NULL elements."""
    return Column(name, "integer[]", np.dtype((">i4", (_ARRAY_HEADER_WORDS + 2 * length,))))


def row_dtype(columns: Sequence[Column]) -> np.dtype[np.void]:
    fields: list[tuple[str, object]] = [("_nfields", ">i2")]
    for i, col in enumerate(columns):
        fields += [(f"_len{i}", ">i4"), (col.name, col.wire)]
    return np.dtype(fields)


def ms_to_pg_timestamp(ms: np.ndarray) -> np.ndarray:
    """Unix epoch milliseconds to PostgreSQL binary timestamps (µs since 2000-01-01)."""
    return ms.astype(np.int64) * 1000 - PG_EPOCH_OFFSET_US


def pg_timestamp_to_ms(us: np.ndarray) -> np.ndarray:
    return (us.astype(np.int64) + PG_EPOCH_OFFSET_US) // 1000


def encode(columns: Sequence[Column], values: dict[str, np.ndarray], n: int,
           nulls: dict[str, np.ndarray] | None = None) -> bytes:
    """A complete binary COPY stream of ``n`` rows; ``values`` maps names to arrays.

    Timestamps must already be PostgreSQL timestamps (:func:`ms_to_pg_timestamp`),
    ``integer[]`` columns 2-D integer arrays of shape (n, length). ``nulls`` maps
    column names to boolean masks of the rows where that column is NULL: rows are
    laid out full width, then the value bytes of NULL fields are cut out and
    their lengths set to -1, all in numpy.
    """
    rows = np.empty(n, dtype=row_dtype(columns))
    rows["_nfields"] = len(columns)
    for i, col in enumerate(columns):
        rows[f"_len{i}"] = col.width
        data = values[col.name]
        if col.sql_type == "integer[]":
            length = data.shape[1]
            words = rows[col.name]
            words[:, 0] = 1
            words[:, 1] = 0
            words[:, 2] = _INT4_OID
            words[:, 3] = length
            words[:, 4] = 1
            words[:, _ARRAY_HEADER_WORDS::2] = 4
            words[:, _ARRAY_HEADER_WORDS + 1::2] = data
        else:
            rows[col.name] = data
    if not nulls or not any(mask.any() for mask in nulls.values()):
        return HEADER + rows.tobytes() + TRAILER
    keep = np.ones((n, rows.dtype.itemsize), dtype=bool)
    for i, col in enumerate(columns):
        mask = nulls.get(col.name)
        if mask is None or not mask.any():
            continue
        rows[f"_len{i}"][mask] = -1
        offset = rows.dtype.fields[col.name][1]  # type: ignore[index]
        keep[mask, offset:offset + col.width] = False
    body = rows.view(np.uint8).reshape(n, rows.dtype.itemsize)[keep]
    return HEADER + body.tobytes() + TRAILER


def decode_rows(columns: Sequence[Column], payload: bytes | memoryview) -> np.ndarray:
    """Rows of a binary COPY body (no header, no trailer) as a structured array.

    Raises ValueError if a field is NULL or not of the expected width.
    """
    dtype = row_dtype(columns)
    rows = np.frombuffer(payload, dtype=dtype)
    if len(rows):
        if np.any(rows["_nfields"] != len(columns)):
            raise ValueError("binary COPY rows with an unexpected number of fields")
        for i, col in enumerate(columns):
            if np.any(rows[f"_len{i}"] != col.width):
                raise ValueError(f"binary COPY field {col.name!r} is NULL or not {col.width} bytes")
    return rows
