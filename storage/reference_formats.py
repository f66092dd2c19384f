"""Reference-station files: the two formats, parsed into stations and hourly values.

Two file formats (docs/reference-data.md has both, with examples):

* ``luchtmeetnet``: JSON as the Luchtmeetnet open API returns it, one object
  ``{"stations": [...], "measurements": [page, ...]}``: the station objects
  (``number``, ``location``, ``geometry.coordinates`` [lon, lat]) and the pages of
  ``/open_api/measurements`` (``{"pagination": ..., "data": [record, ...]}``) as
  downloaded;
* ``csv``: one row per station, metric and hour, with a header naming
  :data:`CSV_COLUMNS` in any order.

Parsing is pure (text in, a :class:`ReferenceFile` out) and refuses a file with one
:class:`ReferenceDataError` naming the line (and for JSON the column and the path of
the value) and the field. Pure: no I/O; :mod:`storage.reference` stores the result.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from json import decoder as json_decoder
from json import scanner as json_scanner
from typing import Any

from storage.exceptions import ReferenceDataError
from stream.core.partials import Metric

#: The metrics a reference station can give: the concentrations the kits measure.
REFERENCE_METRICS = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2)
#: Luchtmeetnet's component formulas for them. Its other components (O3, NO, SO2, ...)
#: are no metric of bikesense: they are left out and counted (``ReferenceFile.skipped``).
LUCHTMEETNET_FORMULAS = {"PM25": Metric.PM25, "PM10": Metric.PM10, "NO2": Metric.NO2}
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
#: A file is read whole; larger ones are refused before parsing (split them).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: At most this many values per file: 57 station-years of four metrics.
MAX_VALUES = 2_000_000
#: Hours outside this range are a mistake in the file (a year typed wrong).
EARLIEST_HOUR = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_HOUR = datetime(2100, 1, 1, tzinfo=UTC)

_STATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MAX_NAME = 200
# Decimal numbers in ASCII only: float() also takes "nan", "1_000" and other scripts' digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_HOUR = timedelta(hours=1)


class Format(StrEnum):
    LUCHTMEETNET = "luchtmeetnet"
    CSV = "csv"


class HourLabel(StrEnum):
    """Which end of its hour a file's time stamp names."""

    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class Station:
    station_id: str
    name: str
    lat_deg: float
    lon_deg: float


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    station_id: str
    metric: Metric
    hour_start: datetime  # UTC, a whole hour
    value_ugm3: float | None  # None: the hour was published without a value
    valid: bool


@dataclass(frozen=True, slots=True)
class ReferenceFile:
    """What a file holds: its stations and values sorted by key, and what was left out."""

    format: Format
    stations: tuple[Station, ...]
    values: tuple[ReferenceValue, ...]
    #: Luchtmeetnet measurements of components that are no bikesense metric, by formula.
    skipped: dict[str, int] = field(default_factory=dict)


# -- reading the bytes --------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """The file's text: UTF-8 (with or without a byte order mark), at most
    :data:`MAX_FILE_BYTES`."""
    if len(data) > MAX_FILE_BYTES:
        raise ReferenceDataError(
            f"the file has {len(data):,} bytes, more than {MAX_FILE_BYTES:,}: split it", line=1
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ReferenceDataError(
            f"not UTF-8 text (byte {exc.start} of the file)", line=line
        ) from None


def detect_format(text: str) -> Format:
    """JSON if the text starts with ``{`` or ``[`` (after white space), CSV otherwise."""
    return Format.LUCHTMEETNET if text.lstrip()[:1] in ("{", "[") else Format.CSV


def parse_reference(
    data: bytes, fmt: Format | None = None, *, hour_label: HourLabel = HourLabel.END
) -> ReferenceFile:
    """Parse a reference file in ``fmt`` (detected from the content when None).

    ``hour_label`` says which end of the hour Luchtmeetnet's ``timestamp_measured``
    names (docs/reference-data.md); CSV names the start, in ``hour_start``.
    """
    text = decode_text(data)
    fmt = fmt or detect_format(text)
    if fmt is Format.CSV:
        return parse_csv(text)
    return parse_luchtmeetnet(text, hour_label=hour_label)


# -- shared checks ------------------------------------------------------------------


def _check_station_id(value: str, fail: Callable[[str], Exception]) -> str:
    if not _STATION_ID.fullmatch(value):
        raise fail(
            f"{value!r} is not a station id (1 to 64 letters, digits and _ . : -, "
            "starting with a letter or digit)"
        )
    return value


def _check_name(value: str, fail: Callable[[str], Exception]) -> str:
    value = value.strip()
    if not 1 <= len(value) <= _MAX_NAME:
        raise fail(f"a station name has 1 to {_MAX_NAME} characters")
    return value


def _check_position(lat: float, lon: float, fail: Callable[[str, str], Exception]) -> None:
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise fail("latitude", f"{lat} is not a latitude (-90 to 90)")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise fail("longitude", f"{lon} is not a longitude (-180 to 180)")
    if lat == 0 and lon == 0:
        raise fail("position", "(0, 0) is a missing position written as zeros")


def _hour_start(instant: datetime, label: HourLabel, fail: Callable[[str], Exception]) -> datetime:
    if instant.tzinfo is None:
        raise fail(
            f"{instant.isoformat()} has no UTC offset: write it as ...Z or ...+01:00 "
            "(a local time is ambiguous)"
        )
    utc = instant.astimezone(UTC)
    if utc.minute or utc.second or utc.microsecond:
        raise fail(f"{instant.isoformat()} is not a whole hour")
    start = utc - _HOUR if label is HourLabel.END else utc
    if not EARLIEST_HOUR <= start < LATEST_HOUR:
        raise fail(f"{instant.isoformat()} lies outside 1970 to 2099")
    return start


def _parse_instant(text: str, fail: Callable[[str], Exception]) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"{text!r} is not an ISO 8601 time (2024-01-15T13:00:00Z)") from None


class _Collector:
    """Stations and values of one file, checked for conflicts as they come."""

    def __init__(self) -> None:
        self.stations: dict[str, tuple[Station, str]] = {}  # id -> station, where first seen
        self.values: dict[tuple[str, Metric, datetime], tuple[ReferenceValue, str]] = {}

    def station(self, station: Station, where: str, fail: Callable[[str], Exception]) -> None:
        seen = self.stations.get(station.station_id)
        if seen is None:
            self.stations[station.station_id] = (station, where)
        elif seen[0] != station:
            old = seen[0]
            raise fail(
                f"station {station.station_id} is given as {station.name!r} at "
                f"({station.lat_deg}, {station.lon_deg}) here but as {old.name!r} at "
                f"({old.lat_deg}, {old.lon_deg}) at {seen[1]}"
            )

    def value(self, value: ReferenceValue, where: str, fail: Callable[[str], Exception]) -> None:
        key = (value.station_id, value.metric, value.hour_start)
        seen = self.values.get(key)
        if seen is None:
            if len(self.values) >= MAX_VALUES:
                raise fail(f"more than {MAX_VALUES:,} values in one file: split it")
            self.values[key] = (value, where)
        elif seen[0] != value:
            # The same value twice is one value (overlapping pages of a download);
            # two different ones for one hour cannot both be right.
            raise fail(
                f"{value.station_id} {value.metric.api_name} {value.hour_start.isoformat()} "
                f"has another value at {seen[1]}"
            )

    def result(self, fmt: Format, skipped: dict[str, int]) -> ReferenceFile:
        return ReferenceFile(
            format=fmt,
            stations=tuple(s for _, (s, _w) in sorted(self.stations.items())),
            values=tuple(v for _, (v, _w) in sorted(self.values.items())),
            skipped=dict(sorted(skipped.items())),
        )


# -- CSV ----------------------------------------------------------------------------


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def parse_csv(text: str) -> ReferenceFile:
    """The plain CSV format: a header with :data:`CSV_COLUMNS` (any order, nothing else),
    then one row per station, metric and hour. Blank lines are ignored."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    collector = _Collector()
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


def _csv_row(row: list[str], index: dict[str, int], line: int, collector: _Collector) -> None:
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

    station_id = _check_station_id(get("station_id").strip(), fail_in("station_id"))
    name = _check_name(get("station_name"), fail_in("station_name"))
    lat, lon = number("lat_deg"), number("lon_deg")
    columns = {"latitude": "lat_deg", "longitude": "lon_deg", "position": "lat_deg"}
    _check_position(lat, lon, lambda what, message: fail_in(columns[what])(message))
    metric_text = get("metric").strip().lower()
    try:
        metric = Metric.from_api_name(metric_text)
    except ValueError:
        metric = None
    if metric not in REFERENCE_METRICS:
        known = ", ".join(m.api_name for m in REFERENCE_METRICS)
        raise fail_in("metric")(f"unknown metric {get('metric')!r}; known metrics: {known}")
    assert metric is not None
    hour = _hour_start(
        _parse_instant(get("hour_start"), fail_in("hour_start")),
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


# -- Luchtmeetnet JSON --------------------------------------------------------------


class _Located(dict[str, Any]):
    """A JSON object that remembers where its ``{`` stood in the text."""

    __slots__ = ("offset",)

    def __init__(self, pairs: list[tuple[str, Any]], offset: int) -> None:
        super().__init__(pairs)
        self.offset = offset


class _LocatingDecoder(json.JSONDecoder):
    """json's decoder with every object a :class:`_Located`: errors can then name the
    line of the record at fault even in a download that is one long line.

    json parses objects in C unless the scanner is the pure-Python one, which calls
    ``parse_object`` with the offset just past the ``{``; that is the only change.
    """

    def __init__(self) -> None:
        super().__init__()
        parse = json_decoder.JSONObject  # type: ignore[attr-defined]

        def parse_object(
            s_and_end: tuple[str, int],
            strict: bool,
            scan_once: Any,
            object_hook: Any,
            object_pairs_hook: Any,
            memo: Any = None,
        ) -> tuple[_Located, int]:
            offset = s_and_end[1] - 1
            result: tuple[_Located, int] = parse(
                s_and_end, strict, scan_once, None, lambda p: _Located(p, offset), memo
            )
            return result

        self.parse_object = parse_object
        self.scan_once = json_scanner.py_make_scanner(self)  # type: ignore[attr-defined]


class _Json:
    """Positions in one JSON text, and errors that name them."""

    def __init__(self, text: str) -> None:
        self.text = text

    def line_column(self, offset: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def error(self, node: Any, path: str, message: str) -> ReferenceDataError:
        offset = node.offset if isinstance(node, _Located) else 0
        line, column = self.line_column(offset)
        return ReferenceDataError(message, line=line, column=column, field=path)

    def failer(self, node: Any, path: str) -> Callable[[str], ReferenceDataError]:
        return lambda message: self.error(node, path, message)


def _member(js: _Json, obj: _Located, key: str, path: str, kind: type[Any]) -> Any:
    if key not in obj:
        raise js.error(obj, path, f"missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        expected = "a list" if kind is list else "a string"
        raise js.error(obj, f"{path}.{key}", f"expected {expected}, got {value!r}")
    return value


def parse_luchtmeetnet(text: str, *, hour_label: HourLabel = HourLabel.END) -> ReferenceFile:
    """The Luchtmeetnet open API's JSON: ``{"stations": [station, ...], "measurements":
    [page, ...]}`` (docs/reference-data.md). Every station a measurement names must be
    in ``stations`` with its position; measurements of other components are skipped."""
    js = _Json(text)
    try:
        top = json.loads(text, cls=_LocatingDecoder)
    except json.JSONDecodeError as exc:
        raise ReferenceDataError(
            f"not valid JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None
    except RecursionError:
        raise ReferenceDataError("not valid JSON: nested too deeply", line=1) from None
    if not isinstance(top, _Located):
        raise js.error(top, "$", 'expected an object {"stations": [...], "measurements": [...]}')
    extra = sorted(set(top) - {"stations", "measurements"})
    if extra:
        raise js.error(top, "$", f"unknown member {extra[0]!r}: expected stations, measurements")
    stations = _luchtmeetnet_stations(js, top, _member(js, top, "stations", "$", list))
    collector = _Collector()
    used: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for p, page in enumerate(_member(js, top, "measurements", "$", list)):
        page_path = f"measurements[{p}]"
        if not isinstance(page, _Located):
            raise js.error(top, page_path, "expected a page of measurements, an object")
        for r, record in enumerate(_member(js, page, "data", page_path, list)):
            path = f"{page_path}.data[{r}]"
            if not isinstance(record, _Located):
                raise js.error(page, path, "expected a measurement, an object")
            _luchtmeetnet_record(js, record, path, hour_label, stations, collector, used, skipped)
    for number, count in used.items():
        station, node, path = stations[number]
        if station is None:
            raise js.error(
                node,
                path,
                f"station {number} has {count} measurement(s) but no position: "
                f"add geometry.coordinates [lon, lat] (from /open_api/stations/{number})",
            )
        collector.station(station, path, js.failer(node, path))
    return collector.result(Format.LUCHTMEETNET, skipped)


_StationEntry = tuple[Station | None, _Located, str]


def _luchtmeetnet_stations(
    js: _Json, top: _Located, items: Sequence[Any]
) -> dict[str, _StationEntry]:
    stations: dict[str, _StationEntry] = {}
    for i, item in enumerate(items):
        path = f"stations[{i}]"
        if not isinstance(item, _Located):
            raise js.error(top, path, f"expected a station, an object, got {item!r}")
        number, station = _luchtmeetnet_station(js, item, path)
        if number in stations:
            raise js.error(
                item, path, f"station {number} is listed twice (also {stations[number][2]})"
            )
        stations[number] = (station, item, path)
    return stations


def _luchtmeetnet_station(js: _Json, item: _Located, path: str) -> tuple[str, Station | None]:
    """A station's number, and the station if the object gives its position."""

    def fail_at(node: _Located, where: str) -> Callable[[str], ReferenceDataError]:
        return lambda message: js.error(node, where, message)

    number = _check_station_id(
        _member(js, item, "number", path, str), fail_at(item, f"{path}.number")
    )
    name = _check_name(_member(js, item, "location", path, str), fail_at(item, f"{path}.location"))
    geometry = item.get("geometry")
    if geometry is None:
        return number, None
    if not isinstance(geometry, _Located):
        raise js.error(item, f"{path}.geometry", f"expected an object, got {geometry!r}")
    coordinates = _member(js, geometry, "coordinates", f"{path}.geometry", list)
    fail = fail_at(geometry, f"{path}.geometry.coordinates")
    if len(coordinates) < 2 or not all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in coordinates[:2]
    ):
        raise fail(f"expected [lon, lat] numbers, got {coordinates!r}")
    lon, lat = float(coordinates[0]), float(coordinates[1])
    _check_position(lat, lon, lambda _what, message: fail(message))
    return number, Station(number, name, lat, lon)


def _luchtmeetnet_record(
    js: _Json,
    record: _Located,
    path: str,
    hour_label: HourLabel,
    stations: dict[str, _StationEntry],
    collector: _Collector,
    used: dict[str, int],
    skipped: dict[str, int],
) -> None:
    def fail_at(member: str) -> Callable[[str], ReferenceDataError]:
        return lambda message: js.error(record, f"{path}.{member}", message)

    formula = _member(js, record, "formula", path, str)
    metric = LUCHTMEETNET_FORMULAS.get(formula)
    if metric is None:
        skipped[formula] = skipped.get(formula, 0) + 1
        return
    number = _member(js, record, "station_number", path, str)
    if number not in stations:
        raise fail_at("station_number")(f"station {number!r} is not in stations")
    if "value" not in record:
        raise js.error(record, path, "missing 'value'")
    raw = record["value"]
    if raw is None:
        value, valid = None, False  # the open API has no validity flag; null is "no value"
    elif isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        value, valid = float(raw), True
    else:
        raise fail_at("value")(f"expected a finite number or null, got {raw!r}")
    stamp = _member(js, record, "timestamp_measured", path, str)
    hour = _hour_start(
        _parse_instant(stamp, fail_at("timestamp_measured")),
        hour_label,
        fail_at("timestamp_measured"),
    )
    used[number] = used.get(number, 0) + 1
    line, column = js.line_column(record.offset)
    collector.value(
        ReferenceValue(number, metric, hour, value, valid),
        f"line {line} column {column} ({path})",
        fail_at("timestamp_measured"),
    )
