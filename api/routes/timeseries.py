"""A metric over time, for one cell, a point or a bbox, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import h3.api.basic_int as h3i
from fastapi import APIRouter, Query, Response

from api.aggregates import align, allowed_windows, judge, selection
from api.deps import (
    ApiSettingsDep,
    ConnDep,
    PrincipalDep,
    SettingsDep,
    StateDep,
    TimeRangeDep,
    check_resolution,
    parse_bbox,
)
from api.errors import BadParameterError, ForbiddenError
from api.models import ERROR_RESPONSES, MetricName, Timeseries, TimeseriesPoint
from api.stats import finite_or_none
from storage.queries import BBox, atime_series

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


CSV_COLUMNS = ("start", "n_readings", "rides", "mean", "std", "min", "max", "p50", "p95",
               "laeq_db", "ci95_low", "ci95_high", "status")


def _parse_cell(text: str) -> int:
    try:
        cell = int(text, 16)
    except ValueError:
        raise BadParameterError("not an H3 cell index (hexadecimal, e.g. 891f1d48177ffff)",
                           parameter="cell") from None
    if not h3i.is_valid_cell(cell):
        raise BadParameterError("not a valid H3 cell index", parameter="cell")
    return cell


@router.get(
    "", response_model=Timeseries,
    summary="A metric over time for a cell, a point or a bbox",
    description=(
        "Give exactly one of `cell` (H3 index), `lat`+`lon` (the cell there at `resolution`) "
        "or `bbox`. Buckets from 1 minute to 1 day; the public may ask for buckets of at "
        "least an hour. `format=csv` answers text/csv with a header row."),
    responses={200: {"content": {"text/csv": {"example": "start,n_readings,...\n"}}}},
)
async def timeseries(
    *,
    metric: Annotated[MetricName, Query(examples=["pm25"])],
    principal: PrincipalDep, time_range: TimeRangeDep, state: StateDep, conn: ConnDep,
    settings: SettingsDep, api: ApiSettingsDep,
    cell: Annotated[str | None, Query(max_length=20, description="H3 index (hex)",
                                      examples=["891f1d48177ffff"])] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, examples=[52.37])] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, examples=[4.9])] = None,
    bbox: Annotated[str | None, Query(description="west,south,east,north",
                                      examples=["4.85,52.35,4.95,52.40"])] = None,
    resolution: Annotated[int | None, Query(ge=0, le=15)] = None,
    bucket: Annotated[Bucket, Query(description="bucket size")] = Bucket.H1,
    fmt: Annotated[Format, Query(alias="format")] = Format.JSON,
) -> Timeseries | Response:
    given = [name for name, v in (("cell", cell), ("lat", lat), ("bbox", bbox)) if v is not None]
    if (lat is None) != (lon is None):
        raise BadParameterError("lat and lon go together",
                                parameter="lon" if lon is None else "lat")
    if len(given) != 1:
        raise BadParameterError("give exactly one of cell, lat+lon or bbox",
                           parameter=given[-1] if given else "cell")
    default_res = max([r for r in settings.h3_resolutions if r <= 9] or settings.h3_resolutions)
    box: BBox | None = None
    cell_int: int | None = None
    if cell is not None:
        cell_int = _parse_cell(cell)
        res = check_resolution(h3i.get_resolution(cell_int), settings, default_res)
    else:
        res = check_resolution(resolution, settings, default_res)
        if bbox is not None:
            box = parse_bbox(bbox)
        elif lat is not None and lon is not None:
            cell_int = h3i.latlng_to_cell(lat, lon, res)
    allowed = allowed_windows(principal, settings, api)
    if principal.role.is_public and bucket.seconds < api.public_min_window_s:
        raise ForbiddenError(f"the public may see buckets of at least {api.public_min_window_s} s; "
                        "an API key of an officer unlocks finer ones", parameter="bucket")
    dividing = [w for w in allowed if bucket.seconds % w == 0]
    if not dividing:
        raise BadParameterError(f"no stored window size divides {bucket.value}", parameter="bucket")
    window_s = max(dividing)
    start, end = align(time_range.start, time_range.end, bucket.seconds)
    if (end - start).total_seconds() / bucket.seconds > MAX_BUCKETS:
        raise BadParameterError(f"more than {MAX_BUCKETS} buckets: shorten the range or use a "
                           "larger bucket", parameter="bucket")
    sel = selection(principal, api, metric=metric.metric, resolution=res, window_s=window_s,
                    start=start, end=end)
    stats = await atime_series(conn, sel, bucket.seconds, bbox=box, cell=cell_int)
    scale = state.bands.scale(metric.metric)
    j = judge(stats, metric.metric, scale, api.min_readings)
    noise = metric is MetricName.NOISE
    points = [
        TimeseriesPoint(
            start=datetime.fromtimestamp(int(row["window_start_ms"]) / 1000, UTC),
            n_readings=int(row["n"]), rides=int(row["rides"]),
            mean=finite_or_none(row["mean"]), std=finite_or_none(row["std"]),
            min=finite_or_none(row["min"]), max=finite_or_none(row["max"]),
            p50=finite_or_none(row["p50"]), p95=finite_or_none(row["p95"]),
            laeq_db=finite_or_none(row["laeq_db"]) if noise else None,
            ci95_low=finite_or_none(j.ci_low[i]), ci95_high=finite_or_none(j.ci_high[i]),
            status="ok" if j.sufficient[i] else "insufficient")
        for i, row in enumerate(stats)
    ]
    result = Timeseries(
        metric=metric, unit=scale.unit, resolution=res, bucket_s=bucket.seconds,
        cell=format(cell_int, "x") if cell_int is not None else None,
        bbox=(box.west, box.south, box.east, box.north) if box else None,
        time_from=start, time_to=end, role=principal.role.value, points=points)
    if fmt is Format.JSON:
        return result
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    unit = scale.unit
    writer.writerow([c if c in {"start", "n_readings", "rides", "status"}
                     else f"{c} [{'dB(A)' if c == 'laeq_db' else unit}]" for c in CSV_COLUMNS])
    for p in points:
        row = p.model_dump()
        writer.writerow(["" if row[c] is None else
                         (row[c].isoformat() if c == "start" else row[c]) for c in CSV_COLUMNS])
    where = result.cell or "bbox"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{metric.value}-{where}.csv"'})
