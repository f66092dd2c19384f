"""GET /v1/timeseries: a metric over time, for one cell, a point or a bbox, as JSON or CSV."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.aggregates import align, read_series
from api.auth import PrincipalDep
from api.deps import ConnDep, PolicyDep, SettingsDep, StateDep, TimeRangeDep
from api.errors import BadParameterError
from api.models import ERROR_RESPONSES, VALUES_DOC, MetricName, Timeseries, Values
from api.params import parse_place
from api.privacy import allowed_windows, check_bucket, selection
from api.render.csv_text import timeseries_csv
from api.values import check_values, corrections_of

router = APIRouter(prefix="/v1/timeseries", tags=["timeseries"], responses=ERROR_RESPONSES)

MAX_BUCKETS = 20_000


class Bucket(StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H3 = "3h"
    H6 = "6h"
    H12 = "12h"
    D1 = "1d"

    @property
    def seconds(self) -> int:
        return int(self.value[:-1]) * {"m": 60, "h": 3600, "d": 86400}[self.value[-1]]


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


@router.get(
    "",
    response_model=Timeseries,
    summary="A metric over time for a cell, a point or a bbox",
    description=(
        "Give exactly one of `cell` (H3 index), `lat`+`lon` (the cell there at `resolution`) "
        "or `bbox`. Buckets from 1 minute to 1 day; the public may ask for buckets of at "
        "least an hour. `format=csv` answers text/csv with a header row. `values=corrected` "
        "gives the values corrected against reference stations (docs/calibration.md)."
    ),
    responses={200: {"content": {"text/csv": {"example": "start,n_readings,...\n"}}}},
)
async def timeseries(
    *,
    metric: Annotated[MetricName, Query(examples=["pm25"])],
    principal: PrincipalDep,
    time_range: TimeRangeDep,
    state: StateDep,
    conn: ConnDep,
    settings: SettingsDep,
    policy: PolicyDep,
    cell: Annotated[
        str | None, Query(max_length=20, description="H3 index (hex)", examples=["891f1d48177ffff"])
    ] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, examples=[52.37])] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, examples=[4.9])] = None,
    bbox: Annotated[
        str | None, Query(description="west,south,east,north", examples=["4.85,52.35,4.95,52.40"])
    ] = None,
    resolution: Annotated[int | None, Query(ge=0, le=15)] = None,
    bucket: Annotated[Bucket, Query(description="bucket size")] = Bucket.H1,
    fmt: Annotated[Format, Query(alias="format")] = Format.JSON,
    values: Annotated[Values, Query(description=VALUES_DOC)] = Values.RAW,
) -> Timeseries | Response:
    check_values(values, metric)
    place = parse_place(settings, cell=cell, lat=lat, lon=lon, bbox=bbox, resolution=resolution)
    check_bucket(principal, policy, bucket.seconds)
    dividing = [w for w in allowed_windows(principal, policy) if bucket.seconds % w == 0]
    if not dividing:
        raise BadParameterError(f"no stored window size divides {bucket.value}", parameter="bucket")
    start, end = align(time_range.start, time_range.end, bucket.seconds)
    if (end - start).total_seconds() / bucket.seconds > MAX_BUCKETS:
        raise BadParameterError(
            f"more than {MAX_BUCKETS} buckets: shorten the range or use a larger bucket",
            parameter="bucket",
        )
    sel = selection(
        principal,
        policy,
        metric=metric.metric,
        resolution=place.resolution,
        window_s=max(dividing),
        start=start,
        end=end,
        corrected=values.corrected,
    )
    scale = state.bands.scale(metric.metric)
    points = await read_series(
        conn,
        sel,
        scale,
        bucket_s=bucket.seconds,
        min_readings=settings.api.min_readings,
        bbox=place.bbox,
        cell=place.cell,
    )
    result = Timeseries(
        metric=metric,
        unit=scale.unit,
        resolution=place.resolution,
        bucket_s=bucket.seconds,
        cell=format(place.cell, "x") if place.cell is not None else None,
        bbox=(place.bbox.west, place.bbox.south, place.bbox.east, place.bbox.north)
        if place.bbox
        else None,
        time_from=start,
        time_to=end,
        role=principal.role.value,
        corrections=await corrections_of(conn, values, sel),
        points=points,
    )
    if fmt is Format.JSON:
        return result
    return Response(
        timeseries_csv(points, scale.unit),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": (
                f'attachment; filename="{metric.value}-{result.cell or "bbox"}'
                f'{"-corrected" if values.corrected else ""}.csv"'
            ),
            "X-Bikesense-Values": values.value,
        },
    )
