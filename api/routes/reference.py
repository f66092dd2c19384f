"""Reference stations and their hourly values: public official data (docs/reference-data.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import ConnDep, TimeRangeDep
from api.models import ERROR_RESPONSES, ErrorResponse
from api.reference import (
    ReferenceMetric,
    ReferenceStations,
    ReferenceValues,
    read_stations,
    read_values,
)

router = APIRouter(prefix="/v1/reference", tags=["reference"], responses=ERROR_RESPONSES)


@router.get(
    "/stations",
    response_model=ReferenceStations,
    summary="Reference stations: position, metrics and the period each covers",
    description="Official monitoring stations imported with `bikesense reference import`. "
    "Open data: every role may read it.",
)
async def stations(principal: PrincipalDep, conn: ConnDep) -> ReferenceStations:
    # principal: no role is needed, but the public's requests count against its rate limit.
    return await read_stations(conn)


@router.get(
    "/values",
    response_model=ReferenceValues,
    summary="A reference station's hourly values of one metric",
    description="The hours that start in [`from`, `to`), in time order, each with its "
    "validity as the network published it. Open data: every role may read it.",
    responses={404: {"model": ErrorResponse, "description": "no such station"}},
)
async def values(
    *,
    principal: PrincipalDep,
    conn: ConnDep,
    time_range: TimeRangeDep,
    station: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
            description="station id, as `/v1/reference/stations` lists it",
            examples=["NL10404"],
        ),
    ],
    metric: Annotated[ReferenceMetric, Query(examples=["no2"])],
) -> ReferenceValues:
    return await read_values(conn, station, metric, time_range.start, time_range.end)
