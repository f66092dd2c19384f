"""The plain CSV format of reference-station data: parsed, and written back.

One row per station, metric and hour, with a header naming :data:`CSV_COLUMNS` in
any order (docs/reference-data.md has an example). A bad row is refused with one
:class:`~storage.exceptions.ReferenceDataError` naming its line and column.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC

from storage.exceptions import ReferenceDataError
from storage.reference_checks import (
    Collector,
    check_name,
    check_position,
    check_station_id,
    hour_start_of,
    parse_instant,
)
from storage.reference_file import (
    REFERENCE_METRICS,
    Format,
    HourLabel,
    ReferenceFile,
    ReferenceValue,
    Station,
)
from stream.core.partials import Metric

#: The columns of the plain CSV format, in the order :func:`format_csv` writes them.
CSV_COLUMNS = (
    "station_id",
    "station_name",
    "lat_deg",
    "lon_deg",
    "metric",
    "hour_start",
    "value_ugm3",
    "valid",
)
# Decimal numbers in ASCII only: float() also takes "nan", "1_000" and other scripts' digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def parse_csv(text: str) -> ReferenceFile:
    """The plain CSV format: a header with :data:`CSV_COLUMNS` (any order, nothing else),
    then one row per station, metric and hour. Blank lines are ignored."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    collector = Collector()
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ReferenceDataError(
                f"no header: the first line names the columns {', '.join(CSV_COLUMNS)}",
                line=max(reader.line_num, 1),
            )
        names = [h.strip() for h in header]
        for name in names:
            if names.count(name) > 1:
                raise ReferenceDataError(f"column {name!r} appears twice", line=1)
            if name not in CSV_COLUMNS:
                raise ReferenceDataError(
                    f"unknown column {name!r}; the columns are {', '.join(CSV_COLUMNS)}", line=1
                )
        missing = [c for c in CSV_COLUMNS if c not in names]
        if missing:
            raise ReferenceDataError(f"missing column(s): {', '.join(missing)}", line=1)
        index = {name: i for i, name in enumerate(names)}
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            _csv_row(row, index, reader.line_num, collector)
    except csv.Error as exc:
        raise ReferenceDataError(f"not valid CSV: {exc}", line=reader.line_num) from None
    return collector.result(Format.CSV, {})


def _csv_row(row: list[str], index: dict[str, int], line: int, collector: Collector) -> None:
    if len(row) != len(index):
        raise ReferenceDataError(
            f"{len(row)} fields, but the header names {len(index)} columns", line=line
        )

    def get(name: str) -> str:
        return row[index[name]]

    def fail_in(name: str) -> Callable[[str], ReferenceDataError]:
        return lambda message: ReferenceDataError(message, line=line, field=name)

    def number(name: str) -> float:
        value = _number(get(name))
        if value is None or not math.isfinite(value):
            raise fail_in(name)(f"{get(name)!r} is not a number")
        return value

    station_id = check_station_id(get("station_id").strip(), fail_in("station_id"))
    name = check_name(get("station_name"), fail_in("station_name"))
    lat, lon = number("lat_deg"), number("lon_deg")
    columns = {"latitude": "lat_deg", "longitude": "lon_deg", "position": "lat_deg"}
    check_position(lat, lon, lambda what, message: fail_in(columns[what])(message))
    metric_text = get("metric").strip().lower()
    try:
        metric = Metric.from_api_name(metric_text)
    except ValueError:
        metric = None
    if metric not in REFERENCE_METRICS:
        known = ", ".join(m.api_name for m in REFERENCE_METRICS)
        raise fail_in("metric")(f"unknown metric {get('metric')!r}; known metrics: {known}")
    assert metric is not None
    hour = hour_start_of(
        parse_instant(get("hour_start"), fail_in("hour_start")),
        HourLabel.START,
        fail_in("hour_start"),
    )
    valid_text = get("valid").strip().lower()
    if valid_text not in _TRUE | _FALSE:
        raise fail_in("valid")(f"{get('valid')!r} is not one of true, false, 1, 0")
    valid = valid_text in _TRUE
    if not get("value_ugm3").strip():
        if valid:
            raise fail_in("value_ugm3")("a valid hour needs a value (or valid false)")
        value = None
    else:
        value = number("value_ugm3")
    where = f"line {line}"
    collector.station(Station(station_id, name, lat, lon), where, fail_in("station_id"))
    collector.value(
        ReferenceValue(station_id, metric, hour, value, valid), where, fail_in("hour_start")
    )


def _format_number(value: float) -> str:
    return repr(value)  # the shortest text that reads back as the same float


def format_csv(stations: Iterable[Station], values: Iterable[ReferenceValue]) -> str:
    """The plain CSV format of ``values``, positions and names from ``stations``: what
    :func:`parse_csv` reads back as the same values."""
    by_id = {s.station_id: s for s in stations}
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in values:
        s = by_id[v.station_id]
        writer.writerow(
            (
                s.station_id,
                s.name,
                _format_number(s.lat_deg),
                _format_number(s.lon_deg),
                v.metric.api_name,
                v.hour_start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "" if v.value_ugm3 is None else _format_number(v.value_ugm3),
                "true" if v.valid else "false",
            )
        )
    return out.getvalue()
