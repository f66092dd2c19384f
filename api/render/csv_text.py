"""CSV: raw-reading exports passed through as the database wrote them, and time series.

An export is a file researchers load with pandas (``comment="#"``) or R
(``comment.char = "#"``): comment lines first, each ``# key: value`` (the
provenance, then each column's unit), then the header of column names, then
the database's CSV lines, one block per slice, and last the comment line
``# complete: rows=N sha256=HEX`` (:mod:`api.render.completion`), after
``# corrections: {...}`` when the export has corrected columns. No value or
column name holds a ``#`` (storage/export_columns.py), so the readers skip
exactly those lines. A time series gets a header with the unit of each value
column, and one line per bucket.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from api.models import TimeseriesPoint
from api.render.columns import ExportColumn
from api.render.completion import Completion, CorrectionsUsed, check_lines
from storage.exports import ExportBlock

#: What the first line says, for a person who opens the file.
ABOUT = (
    "raw readings from bikesense; lines starting with # are comments, and the last one "
    "says whether the file is whole (docs/api.md, Exports)"
)


def comment_value(text: str) -> str:
    """``text`` on one comment line: anything that is not printable (line breaks included)
    as a ``\\uXXXX`` escape."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def csv_head(columns: Sequence[ExportColumn], provenance: Mapping[str, str]) -> bytes:
    """The comment lines and the header row of an export."""
    lines = [f"# about: {ABOUT}"]
    lines += [f"# {key}: {comment_value(value)}" for key, value in provenance.items()]
    lines += [f"# column {c.name}: {comment_value(c.unit)}" for c in columns]
    lines.append(",".join(c.name for c in columns))
    return ("\n".join(lines) + "\n").encode()


async def csv_text_stream(
    columns: Sequence[ExportColumn],
    provenance: Mapping[str, str],
    blocks: AsyncIterator[ExportBlock],
) -> AsyncIterator[bytes]:
    """The head, the database's CSV lines as they come, then the completion line."""
    done = Completion()
    used = CorrectionsUsed()
    yield await done.wrote(csv_head(columns, provenance))
    async for block in blocks:
        check_lines(block.data, block.rows, separators=block.rows)
        used.add(block.corrections)
        yield await done.wrote(block.data, block.rows)
    if any(c.kind == "version" for c in columns):
        yield await done.wrote(f"# corrections: {used.json()}\n".encode())
    yield f"# complete: rows={done.rows} sha256={done.sha256}\n".encode()


#: Columns of a time series in CSV; those not in _UNITLESS carry the unit in the header.
TIMESERIES_COLUMNS = (
    "start",
    "n_readings",
    "rides",
    "mean",
    "std",
    "min",
    "max",
    "p50",
    "p95",
    "p50_error_bound",
    "p95_error_bound",
    "laeq_db",
    "ci95_low",
    "ci95_high",
    "interval_reason",
    "status",
)
_UNITLESS = frozenset({"start", "n_readings", "rides", "interval_reason", "status"})
_DBA = frozenset({"laeq_db"})


def timeseries_csv(points: Iterable[TimeseriesPoint], unit: str) -> str:
    """A header naming each value's unit (dB(A) for LAeq), then a line per bucket;
    absent values are empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The interval is LAeq's for noise (docs/statistics.md), so in dB(A) too.
    writer.writerow(
        [
            c if c in _UNITLESS else f"{c} [{'dB(A)' if c in _DBA else unit}]"
            for c in TIMESERIES_COLUMNS
        ]
    )
    for p in points:
        row = p.model_dump()
        writer.writerow(
            [
                "" if row[c] is None else (row[c].isoformat() if c == "start" else row[c])
                for c in TIMESERIES_COLUMNS
            ]
        )
    return out.getvalue()
