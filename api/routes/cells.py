"""H3 cells with their statistics, as GeoJSON."""

from __future__ import annotations

from typing import Annotated

import h3
import h3.api.basic_int as h3i
import numpy as np
from fastapi import APIRouter, Query

from api.aggregates import align, allowed_windows, choose_window, judge, selection
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
from api.errors import BadParameterError
from api.models import (
    ERROR_RESPONSES,
    CellCollection,
    CellFeature,
    CellStats,
    MetricName,
    Polygon,
)
from api.routes.meta import INDICATIVE_NOTE
from api.stats import finite_or_none
from storage.queries import acell_stats

router = APIRouter(prefix="/v1/cells", tags=["cells"], responses=ERROR_RESPONSES)

#: Cells one response may hold at most; a bigger ask needs a coarser resolution.
MAX_CELLS = 50_000

BBOX_DOC = "west,south,east,north in WGS84 degrees"


def _ring(cell: int) -> list[tuple[float, float]]:
    ring = [(round(lng, 7), round(lat, 7)) for lat, lng in h3i.cell_to_boundary(cell)]
    return [*ring, ring[0]]


@router.get("", response_model=CellCollection, response_model_exclude_none=False,
            summary="Cells in a bbox with their statistics (GeoJSON FeatureCollection)",
            description=(
                "One Feature per H3 cell with data in the range. The public sees a cell only "
                "when its windows hold at least k distinct rides (absent, not zero, below "
                "that). `status: insufficient` marks cells with too few readings to colour: "
                "never read them as clean air. The interval of the mean takes rides, not "
                "readings, as the independent unit (docs/api.md)."))
async def cells(
    *,
    metric: Annotated[MetricName, Query(examples=["pm25"])],
    bbox: Annotated[str, Query(description=BBOX_DOC, examples=["4.85,52.35,4.95,52.40"])],
    principal: PrincipalDep, time_range: TimeRangeDep, state: StateDep, conn: ConnDep,
    settings: SettingsDep, api: ApiSettingsDep,
    resolution: Annotated[int | None, Query(ge=0, le=15, description=(
        "H3 resolution; default the finest configured one up to 9"), examples=[9])] = None,
) -> CellCollection:
    box = parse_bbox(bbox)
    default_res = max([r for r in settings.h3_resolutions if r <= 9] or settings.h3_resolutions)
    res = check_resolution(resolution, settings, default_res)
    mid_lat = np.radians((box.south + box.north) / 2)
    area_km2 = ((box.north - box.south) * 111.32) * ((box.east - box.west) * 111.32
                                                     * max(np.cos(mid_lat), 0.01))
    expected = area_km2 / h3.average_hexagon_area(res, unit="km^2")
    if expected > MAX_CELLS:
        raise BadParameterError(f"this bbox holds about {expected:,.0f} cells at resolution {res}; "
                           f"at most {MAX_CELLS:,} per request: use a smaller bbox or a "
                           "coarser resolution", parameter="bbox")
    window_s = choose_window(time_range.seconds, allowed_windows(principal, settings, api))
    start, end = align(time_range.start, time_range.end, window_s)
    sel = selection(principal, api, metric=metric.metric, resolution=res, window_s=window_s,
                    start=start, end=end)
    stats = await acell_stats(conn, sel, box)
    scale = state.bands.scale(metric.metric)
    j = judge(stats, metric.metric, scale, api.min_readings)
    noise = metric is MetricName.NOISE
    features = []
    for i, row in enumerate(stats):
        cell = int(row["cell"])
        band = scale.bands[int(j.band[i])] if j.band[i] >= 0 else None
        props = CellStats(
            cell=format(cell, "x"), resolution=res, metric=metric, unit=scale.unit,
            status="ok" if j.sufficient[i] else "insufficient",
            n_readings=int(row["n"]), rides=int(row["rides"]), days=int(row["days"]),
            mean=finite_or_none(row["mean"]), std=finite_or_none(row["std"]),
            min=finite_or_none(row["min"]), max=finite_or_none(row["max"]),
            p50=finite_or_none(row["p50"]), p95=finite_or_none(row["p95"]),
            laeq_db=finite_or_none(row["laeq_db"]) if noise else None,
            lamax_db=finite_or_none(row["lamax_db"]) if noise else None,
            ci95_low=finite_or_none(j.ci_low[i]), ci95_high=finite_or_none(j.ci_high[i]),
            band=band.label if band else None, colour=band.colour if band else None)
        features.append(CellFeature(id=props.cell, geometry=Polygon(coordinates=[_ring(cell)]),
                                    properties=props))
    return CellCollection(metric=metric, resolution=res, window_s=window_s, time_from=start,
                          time_to=end, role=principal.role.value,
                          band_version=state.bands.version, note=INDICATIVE_NOTE,
                          features=features)
