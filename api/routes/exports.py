"""Bulk exports of raw readings for researchers, streamed whatever the size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, ServiceUnavailableError, StateDep, TimeRangeDep, parse_bbox
from api.errors import BadParameterError, ForbiddenError, UnauthorizedError
from api.export import (
    arrow_schema,
    csv_text_stream,
    export_columns,
    geojson_text_stream,
    keep_rows,
    parquet_stream,
)
from api.models import ERROR_RESPONSES, MetricName
from storage.exports import copy_readings_text
from storage.queries import aiter_readings
from stream.core.partials import METRIC_COLUMNS

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERROR_RESPONSES)

MAX_KITS = 1000


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    GEOJSON = "geojson"


_MEDIA = {ExportFormat.CSV: "text/csv; charset=utf-8",
          ExportFormat.PARQUET: "application/vnd.apache.parquet",
          ExportFormat.GEOJSON: "application/geo+json"}


def _parse_kits(values: list[str]) -> list[int]:
    kits: list[int] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                kit = int(part)
            except ValueError:
                raise BadParameterError(f"kit ids are whole numbers (got {part!r})",
                                   parameter="kit") from None
            if not 0 <= kit <= 4_294_967_295:
                raise BadParameterError(f"kit id {kit} is outside 0..4294967295", parameter="kit")
            kits.append(kit)
    if len(kits) > MAX_KITS:
        raise BadParameterError(f"at most {MAX_KITS} kits per export", parameter="kit")
    return sorted(set(kits))


@router.get(
    "/readings",
    summary="Raw readings with QA flags, streamed as CSV, Parquet or GeoJSON",
    description=(
        "For researchers and admins (API key). Filtered by time range, bbox, metrics and "
        "kits; rows in a stable order (time, kit, boot, frame, index) and columns in a "
        "stable order with units in their names (`pm25_ugm3`, `noise_laeq_db`, ...); "
        "the Parquet schema and the GeoJSON header also carry each column's unit. "
        "Streamed in constant memory: a month of a whole fleet is fine. `qa_flags` bits "
        "are stream.core.qa.QaFlag (0 = clean)."),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"example": "ts,kit_id,boot_id,...\n"},
                                 "application/vnd.apache.parquet": {},
                                 "application/geo+json": {}},
                     "description": "the readings"}},
)
async def export_readings(
    *,
    principal: PrincipalDep, time_range: TimeRangeDep, state: StateDep,
    fmt: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.CSV,
    bbox: Annotated[str | None, Query(description="west,south,east,north",
                                      examples=["4.85,52.35,4.95,52.40"])] = None,
    metrics: Annotated[list[MetricName] | None, Query(
        description="metric columns to include (repeat or omit for all); rows without "
                    "any of them are left out")] = None,
    kit: Annotated[list[str] | None, Query(description="kit ids (repeat or comma-separate)",
                                           examples=[["17"]])] = None,
) -> StreamingResponse:
    if principal.role.is_public:
        raise UnauthorizedError("raw readings need an API key of a researcher or admin",
                           parameter="X-API-Key", location="header")
    if not principal.role.may_export_raw:
        raise ForbiddenError(f"the {principal.role.value} role may not export raw readings",
                        parameter="X-API-Key", location="header")
    box = parse_bbox(bbox) if bbox is not None else None
    kits = _parse_kits(kit or [])
    chosen = sorted({m.metric for m in metrics}) if metrics else []
    columns = export_columns(chosen or [m.metric for m in MetricName])
    if state.pool is None:
        raise ServiceUnavailableError("no database configured", parameter=None, location="server")
    provenance = {
        "generator": "bikesense",
        "exported_at": datetime.now(UTC).isoformat(),
        "from": time_range.start.isoformat(), "to": time_range.end.isoformat(),
        "bbox": bbox or "", "metrics": ",".join(m.api_name for m in chosen) or "all",
        "kits": ",".join(str(k) for k in kits) or "all",
        "order": "ts, kit_id, boot_id, seq, idx",
    }
    pool = state.pool
    counter = state.metrics.export_rows.labels(fmt.value)
    schema = arrow_schema(columns, provenance)
    chunk_rows = state.api_settings.export_batch_rows

    async def chunks() -> AsyncIterator[np.ndarray]:
        # The connection is taken here, not as a dependency, so that it lives as
        # long as the stream and goes back to the pool when the client is done.
        async with pool.connection() as conn:
            async for chunk in aiter_readings(conn, start=time_range.start, end=time_range.end,
                                              bbox=box, kit_ids=kits or None,
                                              chunk_rows=chunk_rows):
                yield keep_rows(chunk, chosen)

    async def counted(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for data in stream:
            counter.inc(len(data))
            yield data

    async def text(geojson: bool) -> AsyncIterator[bytes]:
        async with pool.connection() as conn:
            async for data in copy_readings_text(
                    conn, [c.name for c in columns], start=time_range.start, end=time_range.end,
                    bbox=box, kits=kits, geojson=geojson,
                    metric_columns=[METRIC_COLUMNS[m] for m in chosen]
                    if 0 < len(chosen) < len(MetricName) else []):
                yield data

    if fmt is ExportFormat.CSV:
        stream = csv_text_stream(columns, text(geojson=False))
    elif fmt is ExportFormat.GEOJSON:
        stream = geojson_text_stream(columns, provenance, text(geojson=True))
    else:
        stream = parquet_stream(columns, schema, chunks())
    stamp = f"{time_range.start:%Y%m%dT%H%M}-{time_range.end:%Y%m%dT%H%M}"
    return StreamingResponse(counted(stream), media_type=_MEDIA[fmt], headers={
        "Content-Disposition": f'attachment; filename="bikesense-readings-{stamp}.{fmt.value}"',
        "Cache-Control": "private, no-store",
        "X-Bikesense-Provenance": "; ".join(f"{k}={v}" for k, v in provenance.items()),
    })
