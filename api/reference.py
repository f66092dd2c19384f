"""Reference-station data for the API: storage's rows as the public response models.

Reference stations are official monitors whose hourly values their networks publish
as open data (docs/reference-data.md), so every role, the public too, may read them:
nothing here comes from a kit or a rider.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from pydantic import BaseModel, Field

from api.errors import NotFoundError
from storage.reference import aget_station, areference_values, astation_summaries
from storage.reference_file import Station as StoredStation
from stream.core.partials import Metric

UNIT = "µg/m³"
_HOUR = timedelta(hours=1)


class ReferenceMetric(StrEnum):
    """The metrics a reference station can give (``storage.reference_file.REFERENCE_METRICS``)."""

    PM1 = "pm1"
    PM25 = "pm25"
    PM10 = "pm10"
    NO2 = "no2"

    @property
    def metric(self) -> Metric:
        return Metric.from_api_name(self.value)


class Coverage(BaseModel):
    metric: ReferenceMetric
    time_from: datetime = Field(description="start of the first hour stored")
    time_to: datetime = Field(description="end of the last hour stored (exclusive)")
    hours: int = Field(description="hours stored in that period, valid or not")
    valid_hours: int


class ReferenceStation(BaseModel):
    station_id: str = Field(examples=["NL10404"])
    name: str
    lat: float
    lon: float
    metrics: list[Coverage]


class ReferenceStations(BaseModel):
    stations: list[ReferenceStation]


class ReferenceHour(BaseModel):
    hour_start: datetime
    value: float | None = Field(description="µg/m³; null when the hour was published without one")
    valid: bool


class ReferenceValues(BaseModel):
    station: ReferenceStation
    metric: ReferenceMetric
    unit: str = UNIT
    time_from: datetime
    time_to: datetime
    values: list[ReferenceHour] = Field(description="the hours stored, in time order")


async def read_stations(conn: psycopg.AsyncConnection[Any]) -> ReferenceStations:
    """Every station with its position and, per metric, the period it covers."""
    return ReferenceStations(
        stations=[
            _station(
                s.station,
                [
                    Coverage(
                        metric=ReferenceMetric(c.metric.api_name),
                        time_from=c.first_hour,
                        time_to=c.last_hour + _HOUR,
                        hours=c.hours,
                        valid_hours=c.valid_hours,
                    )
                    for c in s.coverage
                ],
            )
            for s in await astation_summaries(conn)
        ]
    )


async def read_values(
    conn: psycopg.AsyncConnection[Any],
    station_id: str,
    metric: ReferenceMetric,
    start: datetime,
    end: datetime,
) -> ReferenceValues:
    """The station's hours of ``metric`` that start in ``[start, end)``; 404 for a
    station that is not stored."""
    station = await aget_station(conn, station_id)
    if station is None:
        raise NotFoundError(f"no reference station {station_id!r}", parameter="station")
    hours = await areference_values(conn, station_id, metric.metric, start, end)
    return ReferenceValues(
        station=_station(station, None),
        metric=metric,
        time_from=start,
        time_to=end,
        values=[
            ReferenceHour(hour_start=h.hour_start, value=h.value_ugm3, valid=h.valid) for h in hours
        ],
    )


def _station(station: StoredStation, metrics: list[Coverage] | None) -> ReferenceStation:
    return ReferenceStation(
        station_id=station.station_id,
        name=station.name,
        lat=station.lat_deg,
        lon=station.lon_deg,
        metrics=metrics or [],
    )
