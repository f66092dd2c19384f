"""Parquet of raw-reading exports, streamed in constant memory.

The rows come from ``storage.exports`` in blocks of a slice each, already in
export order, as fixed-width binary rows; each block becomes one Arrow table
(absent values — NaN, -1 satellites, cell 0 — become nulls) and row groups of
about :data:`ROW_GROUP_ROWS` rows go out as they are written. The schema
carries each column's unit in its field metadata and the export's provenance
in the schema metadata (``bikesense``, JSON). Memory is a few slices whatever
the export's size; the footer goes out last, so a file cut short is not a
Parquet file, and only the footer of a whole one states the rows written
(``bikesense_complete`` in its key-value metadata, :mod:`api.render.completion`);
every page carries its CRC-32.

The QA columns are not in the binary rows: ``qa_flag_names`` (its width
varies) is decoded from ``qa_flags`` here by
:func:`storage.export_columns.qa_flag_names`, once per distinct value in a
block, and each ``<metric>_on_map`` is the stream's own test,
:meth:`stream.core.policy.PublicationPolicy.publishable`, on the decoded rows
(vectorised: cheaper here than as seven fields the database writes per row).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from io import BytesIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.concurrency import run_in_threadpool

from api.render.columns import ExportColumn
from api.render.completion import COMPLETE_KEY, CORRECTIONS_KEY, CorrectionsUsed
from storage.copybin import PG_EPOCH_OFFSET_US
from storage.export_columns import qa_flag_names
from storage.exports import ExportBlock, decode_binary_rows
from stream.core.policy import DEFAULT_POLICY

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: H3 indexes are 64-bit with the top bit 0: 15 hex digits (4 bits each) after one 0 nibble.
_NIBBLE_SHIFTS = np.arange(56, -4, -4, dtype=np.int64)


def _fixed_width_strings(text: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """ASCII strings of one width (an ``S<n>`` array) as an Arrow string array, built from
    the bytes as they are: no per-value work, no UTF-8 check (ASCII is UTF-8)."""
    n, width = len(text), text.dtype.itemsize
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(text).view(np.uint8)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)


def _hex_cells(cells: np.ndarray) -> pa.Array:
    """H3 cells as 15-digit hex strings, vectorised; 0 (no cell) becomes null."""
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    digits = _HEX_DIGITS[(cells[:, None] >> _NIBBLE_SHIFTS) & 0xF]
    return _fixed_width_strings(np.ascontiguousarray(digits).view("S15").ravel(), cells != 0)


def _flag_names(flags: np.ndarray) -> pa.Array:
    """``qa_flag_names`` of each reading, decoded once per distinct ``qa_flags`` value."""
    distinct, inverse = np.unique(flags, return_inverse=True)
    names = pa.array([qa_flag_names(int(f)) for f in distinct.tolist()], type=pa.string())
    return names.take(pa.array(inverse.astype(np.int32)))


#: Kinds of column derived here from the others rather than read from binary rows.
_DERIVED_KINDS = frozenset({"flag_names", "bool"})


def binary_columns(columns: Sequence[ExportColumn]) -> list[str]:
    """The columns the binary rows hold: all but those derived here."""
    return [c.name for c in columns if c.kind not in _DERIVED_KINDS]


def _array(rows: np.ndarray, column: ExportColumn) -> pa.Array:
    """One column of decoded binary rows (big-endian, PostgreSQL times) as Arrow."""
    if column.kind == "flag_names":
        return _flag_names(rows["qa_flags"])
    if column.kind == "bool" and column.metric is not None:
        # Binary rows carry absent values as the stream marks them (NaN, cell 0), so the
        # stream's test applies to them as they are.
        return pa.array(DEFAULT_POLICY.publishable(rows, column.metric))
    values = rows[column.name]
    if column.kind == "version":
        # Fixed width, blank where no correction applies; few distinct values a block.
        distinct, inverse = np.unique(values, return_inverse=True)
        texts = [v.decode().rstrip() or None for v in distinct.tolist()]
        return pa.array(texts, type=pa.string()).take(pa.array(inverse.astype(np.int32)))
    if column.kind == "time":
        ms = (values.astype(np.int64) + PG_EPOCH_OFFSET_US) // 1000
        return pa.array(ms.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC"))
    if column.kind in {"float32", "float64"}:
        native = values.astype(np.float32 if column.kind == "float32" else np.float64)
        return pa.array(native, mask=np.isnan(native))
    if column.kind == "sats":
        sats: np.ndarray = values.astype(np.int16)
        return pa.array(sats, mask=sats < 0)
    if column.kind == "cell":
        return _hex_cells(values)
    if column.kind == "name":
        return _fixed_width_strings(values)
    return pa.array(values.astype(np.int64))


def to_table(rows: np.ndarray, columns: Sequence[ExportColumn], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([_array(rows, c) for c in columns], schema=schema)


def arrow_schema(columns: Sequence[ExportColumn], provenance: dict[str, str]) -> pa.Schema:
    types = {
        "time": pa.timestamp("ms", tz="UTC"),
        "int": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "sats": pa.int16(),
        "cell": pa.string(),
        "name": pa.string(),
        "flag_names": pa.string(),
        "bool": pa.bool_(),
        "version": pa.string(),
    }
    fields = [pa.field(c.name, types[c.kind], metadata={"unit": c.unit}) for c in columns]
    return pa.schema(fields, metadata={"bikesense": json.dumps(provenance)})


class _Sink:
    """A write-only file for pyarrow that hands out what was written so far."""

    def __init__(self) -> None:
        self._buffer = BytesIO()
        self._pos = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buffer.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = self._buffer.getvalue()
        self._buffer = BytesIO()
        return data


#: Rows of a Parquet row group: readers work best with row groups of 10^5 rows or more;
#: this many rows of Arrow columns (about 170 bytes each) are held until written, and
#: measured 200,000 cost 25 MB more of peak memory than 100,000 for no gain in speed.
ROW_GROUP_ROWS = 100_000
#: Columns with few distinct values get Parquet dictionaries; on measurements, floats and
#: times grew bigger and slower with them (a dictionary page that overflows falls back).
_DICTIONARY_KINDS = frozenset({"name", "cell", "int", "sats", "flag_names", "version"})


async def parquet_stream(
    columns: Sequence[ExportColumn],
    schema: pa.Schema,
    blocks: AsyncIterator[ExportBlock],
    *,
    pseudonymous: bool,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> AsyncIterator[bytes]:
    """Blocks gathered into row groups of about ``row_group_rows``; the footer, with the
    rows written, goes out when the last is written.

    Decoding and encoding run in a worker thread (numpy and pyarrow release the
    GIL), so the database formats the next slices meanwhile.
    """
    sink = _Sink()
    writer = pq.ParquetWriter(
        sink,
        schema,
        compression="zstd",
        use_dictionary=[c.name for c in columns if c.kind in _DICTIONARY_KINDS],
        write_page_checksum=True,
    )
    names = binary_columns(columns)
    pending: list[pa.Table] = []
    written = 0

    def encode(block: ExportBlock | None) -> bytes:
        nonlocal written
        if block is not None:
            rows = decode_binary_rows(names, block.data, pseudonymous=pseudonymous)
            pending.append(to_table(rows, columns, schema))
        if pending and (block is None or sum(t.num_rows for t in pending) >= row_group_rows):
            table = pa.concat_tables(pending)
            writer.write_table(table, row_group_size=10 * row_group_rows)
            written += table.num_rows
            pending.clear()
        return sink.drain()

    used = CorrectionsUsed()
    try:
        async for block in blocks:
            used.add(block.corrections)
            data = await run_in_threadpool(encode, block)
            if data:
                yield data
        yield await run_in_threadpool(encode, None)
        if any(c.kind == "version" for c in columns):
            writer.add_key_value_metadata({CORRECTIONS_KEY: used.json()})
        # Only an export that got here states that it is whole; the footer is written after.
        writer.add_key_value_metadata({COMPLETE_KEY: json.dumps({"rows": written})})
    finally:
        writer.close()
    yield sink.drain()
