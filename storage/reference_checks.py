"""The checks both reference formats apply, and the collector that finds conflicts.

Each check takes ``fail``, which makes the error: the format's parser builds it to
name where the value stood (the CSV line and column name, the JSON line, column and
path), so that every refusal is one :class:`~storage.exceptions.ReferenceDataError`
a person can act on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from storage.reference_file import (
    EARLIEST_HOUR,
    LATEST_HOUR,
    MAX_VALUES,
    Format,
    HourLabel,
    ReferenceFile,
    ReferenceValue,
    Station,
)
from stream.core.partials import Metric

_STATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MAX_NAME = 200
_HOUR = timedelta(hours=1)


def check_station_id(value: str, fail: Callable[[str], Exception]) -> str:
    if not _STATION_ID.fullmatch(value):
        raise fail(
            f"{value!r} is not a station id (1 to 64 letters, digits and _ . : -, "
            "starting with a letter or digit)"
        )
    return value


def check_name(value: str, fail: Callable[[str], Exception]) -> str:
    value = value.strip()
    if not 1 <= len(value) <= _MAX_NAME:
        raise fail(f"a station name has 1 to {_MAX_NAME} characters")
    return value


def check_position(lat: float, lon: float, fail: Callable[[str, str], Exception]) -> None:
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise fail("latitude", f"{lat} is not a latitude (-90 to 90)")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise fail("longitude", f"{lon} is not a longitude (-180 to 180)")
    if lat == 0 and lon == 0:
        raise fail("position", "(0, 0) is a missing position written as zeros")


def hour_start_of(
    instant: datetime, label: HourLabel, fail: Callable[[str], Exception]
) -> datetime:
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


def parse_instant(text: str, fail: Callable[[str], Exception]) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"{text!r} is not an ISO 8601 time (2024-01-15T13:00:00Z)") from None


class Collector:
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
