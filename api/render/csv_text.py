"""CSV: raw-reading exports passed through as the database wrote them, and time series.

An export's header is the column names; its lines come from PostgreSQL's own
CSV output (``storage.exports``), one block per slice. A time series gets a
header with the unit of each value column, and one line per bucket.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence

from api.models import TimeseriesPoint
from api.render.columns import ExportColumn
from storage.exports import ExportBlock


async def csv_text_stream(
    columns: Sequence[ExportColumn], blocks: AsyncIterator[ExportBlock]
) -> AsyncIterator[bytes]:
    """The header, then the database's CSV lines as they come."""
    yield (",".join(c.name for c in columns) + "\n").encode()
    async for block in blocks:
        yield block.data


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
