"""Streaming encoders of raw-reading exports: CSV, Parquet and GeoJSON in constant memory.

CSV and GeoJSON are formatted by the database (``COPY ... (FORMAT csv)``, see
:func:`storage.exports.copy_readings_text`) and passed through: the fastest
path on one box. Parquet starts from ``storage.queries.aiter_readings``'s numpy
chunks (a binary COPY decoded without Python work per row); each chunk becomes
one Arrow table (absent values — NaN, -1 satellites, cell 0 — become nulls) and
one row group. Memory is one chunk whatever the export's size.

Columns come in a stable order with their units in their names
(``pm25_ugm3``, ``noise_laeq_db``); the Parquet schema and the GeoJSON
header also carry each column's unit.
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

from stream.core.partials import METRIC_COLUMNS, Metric


@dataclass(frozen=True, slots=True)
class ExportColumn:
    name: str  # the column in the export, units in the name
    unit: str
    source: str  # field of ENRICHED_DTYPE
    kind: str  # "int", "float", "time", "cell", "sats"
    metric: Metric | None = None  # only when this metric is asked for


#: The export's columns, in their stable order.
EXPORT_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601, UTC", "ts_ms", "time"),
    ExportColumn("kit_id", "", "kit_id", "int"),
    ExportColumn("boot_id", "", "boot_id", "int"),
    ExportColumn("seq", "frame sequence number", "seq", "int"),
    ExportColumn("idx", "index in frame", "idx", "int"),
    ExportColumn("ride_id", "", "ride_id", "int"),
    ExportColumn("lat_deg", "degree, WGS84", "lat_deg", "float"),
    ExportColumn("lon_deg", "degree, WGS84", "lon_deg", "float"),
    ExportColumn("gnss_fix", "0 none, 1 2-D, 2 3-D", "gnss_fix", "int"),
    ExportColumn("hdop", "", "hdop", "float"),
    ExportColumn("satellites", "count", "satellites", "sats"),
    ExportColumn("speed_mps", "m/s", "speed_mps", "float"),
    ExportColumn("pm1_ugm3", "µg/m³", "pm1_ugm3", "float", Metric.PM1),
    ExportColumn("pm25_ugm3", "µg/m³", "pm25_ugm3", "float", Metric.PM25),
    ExportColumn("pm10_ugm3", "µg/m³", "pm10_ugm3", "float", Metric.PM10),
    ExportColumn("no2_ugm3", "µg/m³", "no2_ugm3", "float", Metric.NO2),
    ExportColumn("noise_laeq_db", "dB(A)", "noise_laeq_db", "float", Metric.NOISE),
    ExportColumn("noise_lamax_db", "dB(A)", "noise_lamax_db", "float", Metric.NOISE),
    ExportColumn("temperature_c", "°C", "temperature_c", "float", Metric.TEMPERATURE),
    ExportColumn("humidity_pct", "%", "humidity_pct", "float", Metric.HUMIDITY),
    ExportColumn("interval_ms", "ms", "interval_ms", "int"),
    ExportColumn("status", "device status bits", "status", "int"),
    ExportColumn("qa_flags", "bits of stream.core.qa.QaFlag, 0 = clean", "qa_flags", "int"),
    ExportColumn("cell", "H3 index at the finest resolution", "cell", "cell"),
    ExportColumn("received_at", "ISO 8601, UTC", "received_ms", "time"),
)


def export_columns(metrics: Sequence[Metric]) -> tuple[ExportColumn, ...]:
    wanted = set(metrics)
    return tuple(c for c in EXPORT_COLUMNS if c.metric is None or c.metric in wanted)


def keep_rows(chunk: np.ndarray, metrics: Sequence[Metric]) -> np.ndarray:
    """Rows with at least one of ``metrics`` present (all rows when no metric is chosen)."""
    if not metrics or len(set(metrics)) == len(Metric):
        return chunk
    present = np.zeros(len(chunk), dtype=bool)
    for metric in metrics:
        present |= ~np.isnan(chunk[METRIC_COLUMNS[metric]])
    return chunk[present]


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: H3 indexes are 64-bit with the top bit 0: 15 hex digits (4 bits each) after one 0 nibble.
_NIBBLE_SHIFTS = np.arange(56, -4, -4, dtype=np.int64)


def _hex_cells(cells: np.ndarray) -> pa.Array:
    """H3 cells as 15-digit hex strings, vectorised; 0 (no cell) becomes null."""
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    digits = _HEX_DIGITS[(cells[:, None] >> _NIBBLE_SHIFTS) & 0xF]
    text = np.ascontiguousarray(digits).view("S15").ravel()
    return pa.array(text, type=pa.binary(15), mask=cells == 0).cast(pa.string())


def _array(chunk: np.ndarray, column: ExportColumn) -> pa.Array:
    values = chunk[column.source]
    if column.kind == "time":
        return pa.array(values.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC"))
    if column.kind == "float":
        return pa.array(values, mask=np.isnan(values))
    if column.kind == "sats":
        return pa.array(values.astype(np.int16), mask=values < 0)
    if column.kind == "cell":
        return _hex_cells(values)
    return pa.array(values.astype(np.int64))


def to_table(chunk: np.ndarray, columns: Sequence[ExportColumn], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([_array(chunk, c) for c in columns], schema=schema)


def arrow_schema(columns: Sequence[ExportColumn], provenance: dict[str, str]) -> pa.Schema:
    types = {"time": pa.timestamp("ms", tz="UTC"), "float": None, "int": pa.int64(),
             "sats": pa.int16(), "cell": pa.string()}
    fields = []
    for c in columns:
        kind = types[c.kind]
        if kind is None:
            kind = pa.float64() if c.source in {"lat_deg", "lon_deg"} else pa.float32()
        fields.append(pa.field(c.name, kind, metadata={"unit": c.unit}))
    return pa.schema(fields, metadata={"bikesense": json.dumps(provenance)})


Chunks = AsyncIterator[np.ndarray]


async def csv_text_stream(columns: Sequence[ExportColumn],
                          body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The header, then the database's CSV as it comes."""
    yield (",".join(c.name for c in columns) + "\n").encode()
    async for data in body:
        yield data


async def geojson_text_stream(columns: Sequence[ExportColumn], provenance: dict[str, str],
                              body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Features from the database, one per line, into a FeatureCollection: separators go
    between features, never after the last."""
    head = {"type": "FeatureCollection", "bikesense": {
        **provenance, "columns": [{"name": c.name, "unit": c.unit} for c in columns]}}
    yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "features": [\n'
    first = True
    async for block in body:
        # Blocks end on whole lines (storage.exports.copy_readings_text).
        text = block[:-1].replace(b"\n", b",\n")
        yield (b"" if first else b",\n") + text
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


async def parquet_stream(columns: Sequence[ExportColumn], schema: pa.Schema,
                         chunks: Chunks) -> AsyncIterator[bytes]:
    """One row group per chunk; the footer goes out when the last chunk is written."""
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")

    def encode(chunk: np.ndarray) -> bytes:
        writer.write_table(to_table(chunk, columns, schema))
        return sink.drain()

    try:
        async for chunk in chunks:
            if len(chunk):
                yield await run_in_threadpool(encode, chunk)
    finally:
        writer.close()
    yield sink.drain()
