"""What the map page needs to draw its pickers and legend."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import PrincipalDep
from api.deps import ConnDep, PolicyDep, SettingsDep, StateDep
from api.models import ERROR_RESPONSES, BandOut, Meta, MetricName, ScaleOut
from api.render.tile_png import MIN_EDGE_PX, average_edge_m
from storage.corrected_windows import acorrected_metrics

router = APIRouter(prefix="/v1", tags=["meta"], responses=ERROR_RESPONSES)

INDICATIVE_NOTE = (
    "Mobile readings from bike-mounted low-cost sensors, averaged over short windows: "
    "indicative only, not regulatory measurements (compare with official stations)."
)


@router.get("/meta", response_model=Meta, summary="Metrics, colour bands and defaults")
async def meta(
    state: StateDep,
    settings: SettingsDep,
    policy: PolicyDep,
    principal: PrincipalDep,
    conn: ConnDep,
) -> Meta:
    scales = [
        ScaleOut(
            metric=MetricName(m.api_name),
            unit=s.unit,
            name=s.name,
            source=s.source,
            reference=s.reference,
            bands=[
                BandOut(label=b.label, colour=b.colour, lower=b.lower, upper=b.upper)
                for b in s.bands
            ],
        )
        for m, s in state.bands.scales.items()
    ]
    return Meta(
        metrics=list(MetricName),
        band_version=state.bands.version,
        scales=scales,
        who_2021=state.bands.who_2021,
        resolutions=list(settings.aggregation.h3_resolutions),
        window_sizes_s=list(settings.aggregation.window_sizes_s),
        role=principal.role.value,
        public_min_rides=policy.public_min_rides,
        public_min_window_s=policy.public_min_window_s,
        basemap_url=settings.api.basemap_url,
        map_center=(settings.api.map_center_lon, settings.api.map_center_lat),
        map_zoom=settings.api.map_zoom,
        edge_m={r: round(average_edge_m(r), 1) for r in settings.aggregation.h3_resolutions},
        min_edge_px=MIN_EDGE_PX,
        corrected_metrics=[MetricName(m.api_name) for m in await acorrected_metrics(conn)],
        note=INDICATIVE_NOTE,
    )
