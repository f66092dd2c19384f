"""GET /v1/exports/readings: raw readings for researchers and admins, streamed whatever the size.

Researchers get daily pseudonyms instead of kit and ride ids, and nothing that
would link a kit's days; admins get the readings as stored; the public gets no
raw readings (:mod:`api.privacy`, docs/privacy.md). The export itself is
:mod:`api.export_stream`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import RawReaderDep
from api.deps import ExportSourceDep, NowDep, PolicyDep, StateDep, TimeRangeDep
from api.export_stream import ExportFormat, ExportRequest, export_response, open_export
from api.models import ERROR_RESPONSES, MetricName
from api.params import parse_bbox, parse_kits, parse_pseudonyms
from api.privacy import export_identities

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERROR_RESPONSES)


@router.get(
    "/readings",
    summary="Raw readings with QA flags, streamed as CSV, Parquet or GeoJSON",
    description=(
        "For researchers and admins (API key). Filtered by time range, bbox, metrics and "
        "kits; columns in a stable order with units in their names (`pm25_ugm3`, "
        "`noise_laeq_db`, ...); the Parquet schema and the GeoJSON header also carry each "
        "column's unit. Streamed in constant memory: a month of a whole fleet is fine. "
        "`qa_flags` bits are stream.core.qa.QaFlag (0 = clean), named in `qa_flag_names`; "
        "`<metric>_on_map` says whether the map counted the reading. Every file carries "
        "its provenance and ends by stating that it is whole (CSV: `#` comment lines "
        "before the header and `# complete: rows=N sha256=HEX` last; docs/api.md).\n\n"
        "**Researchers** get kits and rides by their daily pseudonyms (`kit_pseudonym`, "
        "`ride_pseudonym`: new names every local day), times to the whole second, and no "
        "kit, boot, frame, index, ride id or arrival time; rows are ordered by time, then "
        "kit and ride pseudonym. They filter kits with `kit_pseudonym`, which matches on the "
        "day the name belongs to. **Admins** get the readings as stored, ordered by time, "
        "kit, boot, frame and index, and filter with `kit`."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {
                    "example": "# about: raw readings from bikesense; ...\n# generator: "
                    "bikesense\n...\nts,kit_pseudonym,ride_pseudonym,...\n...\n"
                    "# complete: rows=729 sha256=...\n"
                },
                "application/vnd.apache.parquet": {},
                "application/geo+json": {},
            },
            "description": "the readings",
        }
    },
)
async def export_readings(
    *,
    state: StateDep,
    policy: PolicyDep,
    reader: RawReaderDep,
    time_range: TimeRangeDep,
    source: ExportSourceDep,
    now: NowDep,
    fmt: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.CSV,
    bbox: Annotated[
        str | None, Query(description="west,south,east,north", examples=["4.85,52.35,4.95,52.40"])
    ] = None,
    metrics: Annotated[
        list[MetricName] | None,
        Query(
            description="metric columns to include (repeat or omit for all); rows without "
            "any of them are left out"
        ),
    ] = None,
    kit: Annotated[
        list[str] | None,
        Query(description="admins: kit ids (repeat or comma-separate)", examples=[["17"]]),
    ] = None,
    kit_pseudonym: Annotated[
        list[str] | None,
        Query(
            description="researchers: kits by daily pseudonym (repeat or comma-separate); a name "
            "matches on its own local day only",
            examples=[["k3qz7mfa2bxe"]],
        ),
    ] = None,
) -> StreamingResponse:
    identities = export_identities(
        reader, policy, by_kit_id=bool(kit), by_pseudonym=bool(kit_pseudonym)
    )
    request = ExportRequest(
        fmt=fmt,
        start=time_range.start,
        end=time_range.end,
        bbox=parse_bbox(bbox) if bbox is not None else None,
        metrics=tuple(m.metric for m in metrics or ()),
        kit_ids=parse_kits(kit or []),
        kit_pseudonyms=parse_pseudonyms(kit_pseudonym or []),
    )
    # At most export_concurrency exports at once, export_per_key of one key: 429 or 503.
    return await export_response(
        open_export(source, request, identities, now=now),
        state.export_slots,
        reader.key_id or reader.role.value,
    )
