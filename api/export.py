"""Streaming encoders of raw-reading exports: CSV, Parquet and GeoJSON in constant memory.

The rows come from :func:`storage.exports.aiter_export_blocks` in blocks of a
slice each, already in export order and already encoded by the database: CSV
lines and GeoJSON features pass through as they are; Parquet gets fixed-width
binary rows, which become one Arrow table (absent values — NaN, -1
satellites, cell 0 — become nulls) and one row group per slice. Memory is a
few slices whatever the export's size.

Columns come in a stable order with their units in their names
(``pm25_ugm3``, ``noise_laeq_db``) and depend on the role
(DESIGN.md decision 4, docs/privacy.md): admins get the stored identities
(:data:`ADMIN_COLUMNS`), researchers daily pseudonyms instead and nothing that
links a kit's days (:data:`RESEARCHER_COLUMNS`). The Parquet schema and the
GeoJSON header also carry each column's unit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.concurrency import run_in_threadpool

from storage.copybin import PG_EPOCH_OFFSET_US
from storage.exports import ExportBlock, decode_binary_rows
from stream.core.partials import Metric


@dataclass(frozen=True, slots=True)
class ExportColumn:
    name: str  # the column in the export, units in the name
    unit: str
    kind: str  # "time", "int", "float32", "float64", "sats", "cell", "name"
    metric: Metric | None = None  # only when this metric is asked for


def _measurements() -> tuple[ExportColumn, ...]:
    return (
        ExportColumn("lat_deg", "degree, WGS84", "float64"),
        ExportColumn("lon_deg", "degree, WGS84", "float64"),
        ExportColumn("gnss_fix", "0 none, 1 2-D, 2 3-D", "int"),
        ExportColumn("hdop", "", "float32"),
        ExportColumn("satellites", "count", "sats"),
        ExportColumn("speed_mps", "m/s", "float32"),
        ExportColumn("pm1_ugm3", "µg/m³", "float32", Metric.PM1),
        ExportColumn("pm25_ugm3", "µg/m³", "float32", Metric.PM25),
        ExportColumn("pm10_ugm3", "µg/m³", "float32", Metric.PM10),
        ExportColumn("no2_ugm3", "µg/m³", "float32", Metric.NO2),
        ExportColumn("noise_laeq_db", "dB(A)", "float32", Metric.NOISE),
        ExportColumn("noise_lamax_db", "dB(A)", "float32", Metric.NOISE),
        ExportColumn("temperature_c", "°C", "float32", Metric.TEMPERATURE),
        ExportColumn("humidity_pct", "%", "float32", Metric.HUMIDITY),
        ExportColumn("interval_ms", "ms", "int"),
        ExportColumn("status", "device status bits", "int"),
        ExportColumn("qa_flags", "bits of stream.core.qa.QaFlag, 0 = clean", "int"),
        ExportColumn("cell", "H3 index at the finest resolution", "cell"),
    )


#: An admin's export, in its stable order: the readings as stored.
ADMIN_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601, UTC", "time"),
    ExportColumn("kit_id", "", "int"),
    ExportColumn("boot_id", "", "int"),
    ExportColumn("seq", "frame sequence number", "int"),
    ExportColumn("idx", "index in frame", "int"),
    ExportColumn("ride_id", "", "int"),
    *_measurements(),
    ExportColumn("received_at", "ISO 8601, UTC", "time"),
)

#: A researcher's export, in its stable order: kits and rides by daily pseudonym, times to
#: the second, no boot, frame, index or arrival time (storage/pseudonyms.py says why).
RESEARCHER_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601, UTC, whole seconds", "time"),
    ExportColumn("kit_pseudonym", "the kit's name for this local day", "name"),
    ExportColumn("ride_pseudonym", "the ride's name for this local day", "name"),
    *_measurements(),
)


def export_columns(metrics: Sequence[Metric], *,
                   pseudonymous: bool) -> tuple[ExportColumn, ...]:
    wanted = set(metrics)
    columns = RESEARCHER_COLUMNS if pseudonymous else ADMIN_COLUMNS
    return tuple(c for c in columns if c.metric is None or c.metric in wanted)


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
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap,
                                       nulls)


def _hex_cells(cells: np.ndarray) -> pa.Array:
    """H3 cells as 15-digit hex strings, vectorised; 0 (no cell) becomes null."""
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    digits = _HEX_DIGITS[(cells[:, None] >> _NIBBLE_SHIFTS) & 0xF]
    return _fixed_width_strings(np.ascontiguousarray(digits).view("S15").ravel(), cells != 0)


def _array(values: np.ndarray, column: ExportColumn) -> pa.Array:
    """One column of decoded binary rows (big-endian, PostgreSQL times) as Arrow."""
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
    return pa.Table.from_arrays([_array(rows[c.name], c) for c in columns], schema=schema)


def arrow_schema(columns: Sequence[ExportColumn], provenance: dict[str, str]) -> pa.Schema:
    types = {"time": pa.timestamp("ms", tz="UTC"), "int": pa.int64(), "float32": pa.float32(),
             "float64": pa.float64(), "sats": pa.int16(), "cell": pa.string(),
             "name": pa.string()}
    fields = [pa.field(c.name, types[c.kind], metadata={"unit": c.unit}) for c in columns]
    return pa.schema(fields, metadata={"bikesense": json.dumps(provenance)})


Blocks = AsyncIterator[ExportBlock]


async def csv_text_stream(columns: Sequence[ExportColumn], blocks: Blocks) -> AsyncIterator[bytes]:
    """The header, then the database's CSV lines as they come."""
    yield (",".join(c.name for c in columns) + "\n").encode()
    async for block in blocks:
        yield block.data


async def geojson_text_stream(columns: Sequence[ExportColumn], provenance: dict[str, str],
                              blocks: Blocks) -> AsyncIterator[bytes]:
    """Features from the database into a FeatureCollection: separators go between
    features, never after the last."""
    head = {"type": "FeatureCollection", "bikesense": {
        **provenance, "columns": [{"name": c.name, "unit": c.unit} for c in columns]}}
    yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "features": [\n'
    first = True
    async for block in blocks:
        # Blocks hold whole features separated by ",\n" (storage.exports), none around them.
        if not first:
            yield b",\n"
        yield block.data
        first = False
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


#: Rows of a Parquet row group: readers work best with row groups of 10^5 rows or more;
#: this many rows of Arrow columns (about 170 bytes each) are held until written, and
#: measured 200,000 cost 25 MB more of peak memory than 100,000 for no gain in speed.
ROW_GROUP_ROWS = 100_000
#: Columns with few distinct values get Parquet dictionaries; on measurements, floats and
#: times grew bigger and slower with them (a dictionary page that overflows falls back).
_DICTIONARY_KINDS = frozenset({"name", "cell", "int", "sats"})


async def parquet_stream(columns: Sequence[ExportColumn], schema: pa.Schema, blocks: Blocks, *,
                         pseudonymous: bool,
                         row_group_rows: int = ROW_GROUP_ROWS) -> AsyncIterator[bytes]:
    """Blocks gathered into row groups of about ``row_group_rows``; the footer goes out
    when the last is written.

    Decoding and encoding run in a worker thread (numpy and pyarrow release the
    GIL), so the database formats the next slices meanwhile.
    """
    sink = _Sink()
    writer = pq.ParquetWriter(
        sink, schema, compression="zstd",
        use_dictionary=[c.name for c in columns if c.kind in _DICTIONARY_KINDS])
    names = [c.name for c in columns]
    pending: list[pa.Table] = []

    def encode(block: ExportBlock | None) -> bytes:
        if block is not None:
            rows = decode_binary_rows(names, block.data, pseudonymous=pseudonymous)
            pending.append(to_table(rows, columns, schema))
        if pending and (block is None or sum(t.num_rows for t in pending) >= row_group_rows):
            writer.write_table(pa.concat_tables(pending), row_group_size=10 * row_group_rows)
            pending.clear()
        return sink.drain()

    try:
        async for block in blocks:
            data = await run_in_threadpool(encode, block)
            if data:
                yield data
        yield await run_in_threadpool(encode, None)
    finally:
        writer.close()
    yield sink.drain()
