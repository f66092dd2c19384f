"""The Luchtmeetnet format of reference-station data: the open API's JSON, as downloaded.

One object ``{"stations": [...], "measurements": [page, ...]}``: the station objects
(``number``, ``location``, ``geometry.coordinates`` [lon, lat]) and the pages of
``/open_api/measurements`` (``{"pagination": ..., "data": [record, ...]}``)
(docs/reference-data.md has an example). A bad value is refused with one
:class:`~storage.exceptions.ReferenceDataError` naming the line, column and JSON path
of the record, found with a decoder that remembers where each object stood.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from json import decoder as json_decoder
from json import scanner as json_scanner
from typing import Any

from storage.exceptions import ReferenceDataError
from storage.reference_checks import (
    Collector,
    check_name,
    check_position,
    check_station_id,
    hour_start_of,
    parse_instant,
)
from storage.reference_file import Format, HourLabel, ReferenceFile, ReferenceValue, Station
from stream.core.partials import Metric

#: Luchtmeetnet's component formulas for them. Its other components (O3, NO, SO2, ...)
#: are no metric of bikesense: they are left out and counted (``ReferenceFile.skipped``).
LUCHTMEETNET_FORMULAS = {"PM25": Metric.PM25, "PM10": Metric.PM10, "NO2": Metric.NO2}


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
    collector = Collector()
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

    number = check_station_id(
        _member(js, item, "number", path, str), fail_at(item, f"{path}.number")
    )
    name = check_name(_member(js, item, "location", path, str), fail_at(item, f"{path}.location"))
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
    check_position(lat, lon, lambda _what, message: fail(message))
    return number, Station(number, name, lat, lon)


def _luchtmeetnet_record(
    js: _Json,
    record: _Located,
    path: str,
    hour_label: HourLabel,
    stations: dict[str, _StationEntry],
    collector: Collector,
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
    hour = hour_start_of(
        parse_instant(stamp, fail_at("timestamp_measured")),
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
