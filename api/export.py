"""Streaming encoders of raw-reading exports: CSV, Parquet and GeoJSON in constant memory.

All three start from the database's COPY output (see
:func:`api.queries_extra.copy_readings`), so rows are never held as Python
objects: CSV passes the server's bytes through; GeoJSON wraps the server's
one-feature-per-line text into a FeatureCollection; Parquet parses CSV blocks
of about :data:`PARQUET_BLOCK_BYTES` with Arrow's C++ reader and writes each
as a row group, yielding the file's bytes as they are produced.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from io import BytesIO
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.concurrency import run_in_threadpool

from api.queries_extra import ExportColumn

#: CSV bytes parsed into one Parquet row group (about 60,000 rows).
PARQUET_BLOCK_BYTES = 8 * 1024 * 1024

_ARROW_TYPES: dict[str, Any] = {
    "timestamp": pa.timestamp("ms", tz="UTC"), "int64": pa.int64(), "int32": pa.int32(),
    "int16": pa.int16(), "float64": pa.float64(), "float32": pa.float32(),
    "string": pa.string(),
}


def arrow_schema(columns: Sequence[ExportColumn], provenance: dict[str, str]) -> pa.Schema:
    fields = [pa.field(c.name, _ARROW_TYPES[c.arrow], metadata={"unit": c.unit})
              for c in columns]
    return pa.schema(fields, metadata={"bikesense": json.dumps(provenance)})


def csv_header(columns: Sequence[ExportColumn]) -> bytes:
    return (",".join(c.name for c in columns) + "\n").encode()


async def csv_stream(header: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield header
    async for chunk in body:
        yield chunk


async def geojson_stream(columns: Sequence[ExportColumn], provenance: dict[str, str],
                         body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Features arrive one per line; separators go between them, never after the last."""
    head = {"type": "FeatureCollection", "bikesense": {
        **provenance, "columns": [{"name": c.name, "unit": c.unit} for c in columns]}}
    yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "features": [\n'
    first = True
    pending = b""
    async for chunk in body:
        data = pending + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            continue
        lines, pending = data[:cut], data[cut + 1:]
        if not lines:
            continue
        yield (b"" if first else b",\n") + lines.replace(b"\n", b",\n")
        first = False
    if pending:
        yield (b"" if first else b",\n") + pending
    yield b"\n]}\n"


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


async def parquet_stream(columns: Sequence[ExportColumn], provenance: dict[str, str],
                         body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    schema = arrow_schema(columns, provenance)
    read_options = pacsv.ReadOptions(column_names=[c.name for c in columns],
                                     use_threads=True)
    convert = pacsv.ConvertOptions(column_types=schema, null_values=[""],
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")

    def encode(block: bytes) -> bytes:
        table = pacsv.read_csv(pa.py_buffer(block), read_options=read_options,
                               convert_options=convert)
        writer.write_table(table.cast(schema))
        return sink.drain()

    pending = bytearray()
    async for chunk in body:
        pending += chunk
        if len(pending) >= PARQUET_BLOCK_BYTES:
            cut = pending.rfind(b"\n") + 1
            block = bytes(pending[:cut])
            del pending[:cut]
            if block:
                # Arrow releases the GIL while parsing and compressing.
                yield await run_in_threadpool(encode, block)
    if bytes(pending).strip():
        yield await run_in_threadpool(encode, bytes(pending))
    writer.close()
    yield sink.drain()
