"""Reading export files as docs/api.md describes them, checking that each one is whole."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_COMPLETE = re.compile(rb"# complete: rows=(\d+) sha256=([0-9a-f]{64})\n")


def last_line(data: bytes) -> tuple[bytes, bytes]:
    """``data`` as (every byte before its last line, its last line)."""
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data[:cut], data[cut:]


@dataclass(frozen=True, slots=True)
class CsvExport:
    comments: dict[str, str]  # the "# key: value" lines before the header
    header: list[str]
    rows: list[dict[str, str]]
    corrections: dict[str, list[str]] | None = None  # the "# corrections:" line, if any


def read_csv_export(data: bytes) -> CsvExport:
    """A CSV export, checked whole: comment lines, the header, the rows, and a last line
    stating the rows and the SHA-256 of every byte before it."""
    body, last = last_line(data)
    complete = _COMPLETE.fullmatch(last)
    assert complete is not None, f"no completion line at the end: {last[-200:]!r}"
    assert hashlib.sha256(body).hexdigest() == complete[2].decode()
    lines = body.decode().splitlines()
    # With corrected columns, the corrections used are on the line before the last.
    corrections: dict[str, list[str]] | None = None
    if lines and lines[-1].startswith("# corrections: "):
        corrections = json.loads(lines.pop()[len("# corrections: ") :])
    comments = [ln for ln in lines if ln.startswith("#")]
    assert lines[: len(comments)] == comments, "comment lines only before the header"
    assert all(ln.startswith("# ") and ": " in ln for ln in comments)
    reader = csv.reader(io.StringIO("\n".join(lines[len(comments) :]) + "\n"))
    header = next(reader)
    rows = [dict(zip(header, r, strict=True)) for r in reader]
    assert len(rows) == int(complete[1])
    return CsvExport(
        comments=dict(ln[2:].split(": ", 1) for ln in comments),
        header=header,
        rows=rows,
        corrections=corrections,
    )


def read_geojson_export(data: bytes) -> dict[str, Any]:
    """A GeoJSON export, checked whole: its last line holds ``bikesense_complete`` with
    the features' count and the SHA-256 of every byte before that line."""
    collection: dict[str, Any] = json.loads(data)
    body, last = last_line(data)
    assert last.startswith(b'"bikesense_complete": ')
    complete = collection["bikesense_complete"]
    sha256 = hashlib.sha256(body).hexdigest()
    assert complete == {"rows": len(collection["features"]), "sha256": sha256}
    return collection


def read_parquet_export(data: bytes) -> pa.Table:
    """A Parquet export, checked whole: the footer states the rows written, and every
    page's checksum holds."""
    meta = pq.read_metadata(io.BytesIO(data))
    assert meta.metadata is not None
    assert json.loads(meta.metadata[b"bikesense_complete"]) == {"rows": meta.num_rows}
    table = pq.read_table(io.BytesIO(data), page_checksum_verification=True)
    assert table.num_rows == meta.num_rows
    return table
