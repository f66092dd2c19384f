"""What a reference-station file holds: stations and hourly values, whatever its format.

:mod:`storage.reference_csv` and :mod:`storage.reference_luchtmeetnet` parse into these;
:mod:`storage.reference_checks` holds the checks both apply; :mod:`storage.reference`
stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from stream.core.partials import Metric

#: The metrics a reference station can give: the concentrations the kits measure.
REFERENCE_METRICS = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2)
#: At most this many values per file: 57 station-years of four metrics.
MAX_VALUES = 2_000_000
#: Hours outside this range are a mistake in the file (a year typed wrong).
EARLIEST_HOUR = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_HOUR = datetime(2100, 1, 1, tzinfo=UTC)


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
