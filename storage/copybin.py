"""PostgreSQL binary COPY, encoded and decoded with numpy: no Python work per row.

Binary COPY is a header, then per row a field count and, per field, a length and
the value in network byte order, then a trailer (PostgreSQL docs, "COPY", section
"Binary Format"). When every field has a fixed width and is never NULL, every row
has the same layout, so a whole batch is one numpy structured array: one
``tobytes()`` out, one ``frombuffer()`` in. Absent values travel as NaN or a
sentinel that SQL turns into NULL (``NULLIF``), or :func:`encode` cuts them out
as NULL fields.
"""

from __future__ import annotations

import functools
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
#: Cutting NULLs run by run costs about as much Python per run as masking this many
#: bytes does in numpy (_cut_null_values chooses by it).
_RUN_COST_BYTES = 4096
#: Rows :func:`encode` writes at a time: a block of rows (a few hundred bytes each)
#: stays in the CPU's cache while each of its fields is written.
_BLOCK_ROWS = 2048


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


@functools.lru_cache(maxsize=64)
def _template(columns: tuple[Column, ...]) -> np.ndarray:
    """One row with everything but the values filled in: field count, lengths, array
    headers. Rows start as copies of it, one contiguous copy instead of a strided
    write per length and header word."""
    row = np.zeros(1, dtype=row_dtype(columns))
    row["_nfields"] = len(columns)
    for i, col in enumerate(columns):
        row[f"_len{i}"] = col.width
        if col.sql_type == "integer[]":
            words = row[col.name]
            length = (words.shape[1] - _ARRAY_HEADER_WORDS) // 2
            words[:, :_ARRAY_HEADER_WORDS] = (1, 0, _INT4_OID, length, 1)
            words[:, _ARRAY_HEADER_WORDS::2] = 4
    row.setflags(write=False)
    return row


def encode(
    columns: Sequence[Column],
    values: dict[str, np.ndarray],
    n: int,
    nulls: dict[str, np.ndarray] | None = None,
) -> bytes:
    """A complete binary COPY stream of ``n`` rows; ``values`` maps names to arrays.

    Timestamps must already be PostgreSQL timestamps (:func:`ms_to_pg_timestamp`),
    ``integer[]`` columns 2-D integer arrays of shape (n, length). ``nulls`` maps
    column names to boolean masks of the rows where that column is NULL: rows are
    laid out full width, then the value bytes of NULL fields are cut out and
    their lengths set to -1, in numpy.
    """
    template = _template(tuple(columns))
    rows = np.empty(n, dtype=template.dtype)
    fields = [
        (array_elements(rows, col) if col.sql_type == "integer[]" else rows[col.name], data)
        for col in columns
        for data in (values[col.name],)
    ]
    # Block by block, every field of a block (after the template's field counts, lengths
    # and array headers): each field written alone would walk the whole payload's memory
    # once more (and each value column of a structured source too), which cost four
    # times as much for the readings (bench/RESULTS.md).
    raw = rows.view(np.uint8).reshape(n, template.dtype.itemsize)
    template_bytes = template.view(np.uint8)
    for start in range(0, n, _BLOCK_ROWS):
        end = start + _BLOCK_ROWS
        raw[start:end] = template_bytes
        for field, data in fields:
            # A scalar is one value for every row.
            field[start:end] = data[start:end] if np.ndim(data) else data
    return payload(columns, rows, nulls)


def empty_rows(columns: Sequence[Column], n: int) -> np.ndarray:
    """``n`` rows of ``columns`` laid out full width, every value 0 (array elements too):
    for a caller that writes the values itself (fields by column name,
    :func:`array_elements` for arrays), then calls :func:`payload`."""
    return np.repeat(_template(tuple(columns)), n)


def array_elements(rows: np.ndarray, column: Column) -> np.ndarray:
    """The elements of the ``integer[]`` column ``column`` of :func:`empty_rows`'s ``rows``,
    (rows, length), to write into."""
    elements: np.ndarray = rows[column.name][:, _ARRAY_HEADER_WORDS + 1 :: 2]
    return elements


def payload(
    columns: Sequence[Column], rows: np.ndarray, nulls: dict[str, np.ndarray] | None = None
) -> bytes:
    """The binary COPY stream of :func:`empty_rows`'s ``rows`` with their values written,
    NULL where ``nulls`` says (see :func:`encode`)."""
    null_columns = [
        (i, col, mask)
        for i, col in enumerate(columns)
        if (mask := (nulls or {}).get(col.name)) is not None and mask.any()
    ]
    # One join, one copy: a batch's payload runs to megabytes.
    if not null_columns:
        return b"".join((HEADER, rows.view(np.uint8).data, TRAILER))
    for i, _col, mask in null_columns:
        rows[f"_len{i}"][mask] = -1
    parts = [p.data.cast("B") for p in _cut_null_values(rows, null_columns)]
    return b"".join((HEADER, *parts, TRAILER))


def _cut_null_values(
    rows: np.ndarray, null_columns: list[tuple[int, Column, np.ndarray]]
) -> list[np.ndarray]:
    """The rows without the value bytes of their NULL fields, as byte arrays to join.

    Rows are cut run by run, a run being consecutive rows with NULLs in the same
    fields: the bytes kept are then the same few slices of every row of the run,
    copied slice by slice. Data usually has few such runs (a kit without an NO2
    cell, a metric absent from a cell-window; callers free to order rows group
    them), where one byte mask over every row cost several times as much. With
    many short runs the Python loop would cost more, so that case keeps the mask.
    """
    n, width = len(rows), rows.dtype.itemsize
    flat = rows.view(np.uint8).reshape(n, width)
    masks = np.stack([mask for _, _, mask in null_columns], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(masks[1:] != masks[:-1], axis=1)])
    if len(starts) * _RUN_COST_BYTES > n * width:
        keep = np.ones((n, width), dtype=bool)
        for _i, col, mask in null_columns:
            offset = rows.dtype.fields[col.name][1]  # type: ignore[index]
            keep[mask, offset : offset + col.width] = False
        return [flat[keep]]
    parts: list[np.ndarray] = []
    for start, end in zip(starts, [*starts[1:], n], strict=True):
        cut = [
            (rows.dtype.fields[col.name][1], col.width)  # type: ignore[index]
            for j, (_i, col, _m) in enumerate(null_columns)
            if masks[start, j]
        ]
        kept, at = [], 0
        for offset, size in sorted(cut):
            kept.append((at, offset))
            at = offset + size
        kept.append((at, width))
        block = flat[start:end]
        out = np.empty((end - start, sum(b - a for a, b in kept)), dtype=np.uint8)
        pos = 0
        for a, b in kept:
            out[:, pos : pos + b - a] = block[:, a:b]
            pos += b - a
        parts.append(out)
    return parts


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
