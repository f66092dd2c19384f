"""H3 cells with their statistics, as GeoJSON."""

from __future__ import annotations

from typing import Annotated

import h3
import numpy as np
import pydantic_core
from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api.aggregates import align, cell_features_json, choose_window, read_cells
from api.auth import PrincipalDep
from api.deps import ConnDep, PolicyDep, SettingsDep, StateDep, TimeRangeDep
from api.errors import BadParameterError
from api.models import (
    ERROR_RESPONSES,
    VALUES_DOC,
    CellCollection,
    MetricName,
    Values,
)
from api.params import check_resolution, default_resolution, parse_bbox
from api.privacy import allowed_windows, selection
from api.routes.meta import INDICATIVE_NOTE
from api.values import check_values, corrections_of
from storage.withheld import awithheld

router = APIRouter(prefix="/v1/cells", tags=["cells"], responses=ERROR_RESPONSES)

#: Cells one response may hold at most; a bigger ask needs a coarser resolution.
MAX_CELLS = 50_000

BBOX_DOC = "west,south,east,north in WGS84 degrees"


@router.get(
    "",
    response_model=CellCollection,
    response_model_exclude_none=False,
    summary="Cells in a bbox with their statistics (GeoJSON FeatureCollection)",
    description=(
        "One Feature per H3 cell with data in the range. The public sees a cell only "
        "when its windows hold at least k distinct rides (absent, not zero, below "
        "that). `status: insufficient` marks cells with too few readings to colour: "
        "never read them as clean air. The 95 % interval is that of the value "
        "shown (LAeq for noise), with readings of one ride counted as fewer "
        "independent ones; `interval_reason` says why a cell has none "
        "(docs/statistics.md). `values=corrected` gives the values corrected against "
        "reference stations, under the same privacy rules (docs/calibration.md)."
    ),
)
async def cells(
    *,
    metric: Annotated[MetricName, Query(examples=["pm25"])],
    bbox: Annotated[str, Query(description=BBOX_DOC, examples=["4.85,52.35,4.95,52.40"])],
    principal: PrincipalDep,
    time_range: TimeRangeDep,
    state: StateDep,
    conn: ConnDep,
    settings: SettingsDep,
    policy: PolicyDep,
    resolution: Annotated[
        int | None,
        Query(
            ge=0,
            le=15,
            description=("H3 resolution; default the finest configured one up to 9"),
            examples=[9],
        ),
    ] = None,
    values: Annotated[Values, Query(description=VALUES_DOC)] = Values.RAW,
) -> Response:
    check_values(values, metric)
    box = parse_bbox(bbox)
    res = check_resolution(resolution, settings, default_resolution(settings))
    mid_lat = np.radians((box.south + box.north) / 2)
    area_km2 = ((box.north - box.south) * 111.32) * (
        (box.east - box.west) * 111.32 * max(np.cos(mid_lat), 0.01)
    )
    expected = area_km2 / h3.average_hexagon_area(res, unit="km^2")
    if expected > MAX_CELLS:
        raise BadParameterError(
            f"this bbox holds about {expected:,.0f} cells at resolution {res}; at most "
            f"{MAX_CELLS:,} per request: use a smaller bbox or a coarser resolution",
            parameter="bbox",
        )
    window_s = choose_window(time_range.seconds, allowed_windows(principal, policy))
    start, end = align(time_range.start, time_range.end, window_s)
    sel = selection(
        principal,
        policy,
        metric=metric.metric,
        resolution=res,
        window_s=window_s,
        start=start,
        end=end,
        corrected=values.corrected,
    )
    stats, covariate = await read_cells(conn, sel, box)
    # For the public: whether units were held back around the view (a flag per whole
    # district-day with at least k rides, never per cell: storage.withheld.awithheld).
    held = await awithheld(conn, sel, box)
    corrections = await corrections_of(conn, values, sel)

    def render() -> bytes:
        envelope = CellCollection(
            metric=metric,
            resolution=res,
            window_s=window_s,
            time_from=start,
            time_to=end,
            role=principal.role.value,
            band_version=state.bands.version,
            note=INDICATIVE_NOTE,
            withheld=held,
            corrections=corrections,
            features=[],
        ).model_dump(mode="json", by_alias=True)
        # The features as their models would serialise them (api.aggregates.cell_features_json),
        # put in place of the empty list.
        head, empty, tail = pydantic_core.to_json(envelope).partition(b'"features":[]')
        if not empty or b'"features":[]' in tail:
            raise RuntimeError("the envelope's features are not one empty list")  # a bug
        features = cell_features_json(
            stats,
            sel,
            state.bands.scale(metric.metric),
            min_readings=settings.api.min_readings,
            covariate=covariate,
        )
        return head + b'"features":' + features + tail

    # A long range at a fine resolution is a thousand cells and more: their features and
    # JSON are built in a worker thread, so that the event loop keeps answering /healthz
    # and tiles meanwhile (about 0.3 s of it per request otherwise, bench/bench_load.py).
    return Response(await run_in_threadpool(render), media_type="application/json")
