"""Bulk exports of raw readings for researchers and admins, streamed whatever the size.

Researchers get daily pseudonyms instead of kit and ride ids, and nothing that
would link a kit's days (DESIGN.md decision 4, docs/privacy.md); admins get the
readings as stored; the public gets no raw readings.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing
from enum import StrEnum
from typing import Annotated, Any

import anyio
import psycopg
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import Send

from api.deps import (
    NowDep,
    PrincipalDep,
    ServiceUnavailableError,
    StateDep,
    TimeRangeDep,
    parse_bbox,
)
from api.errors import BadParameterError, ForbiddenError, UnauthorizedError
from api.export import (
    arrow_schema,
    csv_text_stream,
    export_columns,
    geojson_text_stream,
    parquet_stream,
)
from api.models import ERROR_RESPONSES, MetricName
from api.roles import Role
from storage.exceptions import StorageError
from storage.exports import (
    EXPORT_CONNECTIONS,
    Encoding,
    ExportBlock,
    ExportFilter,
    Pseudonyms,
    aiter_export_blocks,
)
from storage.pseudonyms import PSEUDONYM_CHARS, pseudonym_key_from_environment
from stream.core.partials import METRIC_COLUMNS

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERROR_RESPONSES)

MAX_KITS = 1000
#: Rows per slice (at most ``export_batch_rows``): a slice is one block in memory, three
#: or four of them at a time (CSV about 200 bytes a row, GeoJSON 600, binary rows 300).
_SLICE_ROWS = {Encoding.CSV: 20_000, Encoding.GEOJSON: 8_000, Encoding.BINARY: 20_000}
#: A second connection for an export is taken only if the pool has one or can open one soon.
_SECOND_CONNECTION_WAIT_S = 0.5
_PSEUDONYM = re.compile(f"[a-z2-7]{{{PSEUDONYM_CHARS}}}")


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    GEOJSON = "geojson"


_MEDIA = {ExportFormat.CSV: "text/csv; charset=utf-8",
          ExportFormat.PARQUET: "application/vnd.apache.parquet",
          ExportFormat.GEOJSON: "application/geo+json"}
_ENCODING = {ExportFormat.CSV: Encoding.CSV, ExportFormat.GEOJSON: Encoding.GEOJSON,
             ExportFormat.PARQUET: Encoding.BINARY}


def _split(values: list[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _parse_kits(values: list[str]) -> list[int]:
    kits: list[int] = []
    for part in _split(values):
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


def _parse_pseudonyms(values: list[str]) -> frozenset[str]:
    names = _split(values)
    for name in names:
        if not _PSEUDONYM.fullmatch(name):
            raise BadParameterError(
                f"a kit pseudonym is {PSEUDONYM_CHARS} characters a-z and 2-7 (got {name!r})",
                parameter="kit_pseudonym")
    if len(names) > MAX_KITS:
        raise BadParameterError(f"at most {MAX_KITS} kits per export",
                                parameter="kit_pseudonym")
    return frozenset(names)


async def _connections(stack: AsyncExitStack, pool: AsyncConnectionPool,
                       timeout_s: float) -> list[psycopg.AsyncConnection[Any]]:
    """One connection, and up to EXPORT_CONNECTIONS if the pool has them free right away:
    an export never waits for, nor starves other requests of, its extra connections."""
    conns = [await stack.enter_async_context(pool.connection(timeout=timeout_s))]
    while len(conns) < min(EXPORT_CONNECTIONS, pool.max_size - 1):
        try:
            conns.append(await stack.enter_async_context(
                pool.connection(timeout=_SECOND_CONNECTION_WAIT_S)))
        except PoolTimeout:
            break
    return conns


class _ExportResponse(StreamingResponse):
    """A streamed export that, however the stream ends (finished, failed, or cancelled
    because the client went away), closes its blocks before returning, shielded from
    the cancellation: the export's queries end and its connections go back to the pool
    idle, now, and not whenever the generators are garbage collected (in tasks of their
    own, in any order, where closing them raced)."""

    def __init__(self, content: AsyncIterator[bytes], blocks: AsyncGenerator[ExportBlock],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._blocks = blocks

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._blocks.aclose()


@router.get(
    "/readings",
    summary="Raw readings with QA flags, streamed as CSV, Parquet or GeoJSON",
    description=(
        "For researchers and admins (API key). Filtered by time range, bbox, metrics and "
        "kits; columns in a stable order with units in their names (`pm25_ugm3`, "
        "`noise_laeq_db`, ...); the Parquet schema and the GeoJSON header also carry each "
        "column's unit. Streamed in constant memory: a month of a whole fleet is fine. "
        "`qa_flags` bits are stream.core.qa.QaFlag (0 = clean).\n\n"
        "**Researchers** get kits and rides by their daily pseudonyms (`kit_pseudonym`, "
        "`ride_pseudonym`: new names every local day), times to the whole second, and no "
        "kit, boot, frame, index, ride id or arrival time; rows are ordered by time, then "
        "kit and ride pseudonym. They filter kits with `kit_pseudonym`, which matches on the "
        "day the name belongs to. **Admins** get the readings as stored, ordered by time, "
        "kit, boot, frame and index, and filter with `kit`."),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"example": "ts,kit_pseudonym,ride_pseudonym,...\n"},
                                 "application/vnd.apache.parquet": {},
                                 "application/geo+json": {}},
                     "description": "the readings"}},
)
async def export_readings(
    *,
    principal: PrincipalDep, time_range: TimeRangeDep, state: StateDep, now: NowDep,
    fmt: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.CSV,
    bbox: Annotated[str | None, Query(description="west,south,east,north",
                                      examples=["4.85,52.35,4.95,52.40"])] = None,
    metrics: Annotated[list[MetricName] | None, Query(
        description="metric columns to include (repeat or omit for all); rows without "
                    "any of them are left out")] = None,
    kit: Annotated[list[str] | None, Query(
        description="admins: kit ids (repeat or comma-separate)", examples=[["17"]])] = None,
    kit_pseudonym: Annotated[list[str] | None, Query(
        description="researchers: kits by daily pseudonym (repeat or comma-separate); a name "
                    "matches on its own local day only", examples=[["k3qz7mfa2bxe"]])] = None,
) -> StreamingResponse:
    role = principal.role
    if role.is_public:
        raise UnauthorizedError("raw readings need an API key of a researcher or admin",
                                parameter="X-API-Key", location="header")
    if not role.may_export_raw:
        raise ForbiddenError(f"the {role.value} role may not export raw readings",
                             parameter="X-API-Key", location="header")
    pseudonymous = role is not Role.ADMIN
    if pseudonymous and kit:
        # Asking by real id and reading back the pseudonyms would undo them.
        raise ForbiddenError("researchers name kits by their daily pseudonym: use kit_pseudonym",
                             parameter="kit")
    if not pseudonymous and kit_pseudonym:
        raise BadParameterError("admins filter by kit id (`bikesense kits pseudonym` maps a "
                                "day's pseudonyms to kits)", parameter="kit_pseudonym")
    box = parse_bbox(bbox) if bbox is not None else None
    kits = _parse_kits(kit or [])
    names = _parse_pseudonyms(kit_pseudonym or [])
    chosen = sorted({m.metric for m in metrics}) if metrics else []
    columns = export_columns(chosen or [m.metric for m in MetricName], pseudonymous=pseudonymous)
    if state.pool is None:
        raise ServiceUnavailableError("no database configured", parameter=None, location="server")
    day_tz = state.settings.day_tz
    pseudonyms = None
    if pseudonymous:
        try:
            pseudonyms = Pseudonyms(pseudonym_key_from_environment(state.settings.state_dir),
                                    day_tz)
        except (StorageError, OSError) as exc:
            raise ServiceUnavailableError(f"the pseudonym key cannot be read: {exc}",
                                          parameter=None, location="server") from exc
    flt = ExportFilter(
        start=time_range.start, end=time_range.end, bbox=box, kit_ids=tuple(kits),
        kit_pseudonyms=names,
        metric_columns=tuple(METRIC_COLUMNS[m] for m in chosen)
        if 0 < len(chosen) < len(MetricName) else ())
    provenance = {
        "generator": "bikesense",
        "exported_at": now.isoformat(),
        "from": time_range.start.isoformat(), "to": time_range.end.isoformat(),
        "bbox": bbox or "", "metrics": ",".join(m.api_name for m in chosen) or "all",
        "kits": ",".join(sorted(names) if pseudonymous else (str(k) for k in kits)) or "all",
        "identities": (f"daily pseudonyms, local days of {day_tz}" if pseudonymous
                       else "as stored"),
        "order": ("ts, kit_pseudonym, ride_pseudonym" if pseudonymous
                  else "ts, kit_id, boot_id, seq, idx"),
    }
    pool = state.pool
    counter = state.metrics.export_rows.labels(fmt.value)
    encoding = _ENCODING[fmt]
    slice_rows = min(state.api_settings.export_batch_rows, _SLICE_ROWS[encoding])
    timeout_s = state.api_settings.database_timeout_s

    async def blocks() -> AsyncGenerator[ExportBlock]:
        # The connections are taken here, not as a dependency, so that they live as
        # long as the stream and go back to the pool when the client is done.
        stack = AsyncExitStack()
        try:
            # Shielded like the clean-up below: the pool checks a connection with a
            # query as it hands it out (waiting at most timeout_s for one).
            with anyio.CancelScope(shield=True):
                conns = await _connections(stack, pool, timeout_s)
            async with aclosing(aiter_export_blocks(
                    conns, [c.name for c in columns], flt, encoding, day_tz=day_tz,
                    pseudonyms=pseudonyms, slice_rows=slice_rows)) as exported:
                async for block in exported:
                    yield block
        finally:
            # Shielded: a stream whose client went away is cancelled again at every await
            # (anyio), and the connections must still go back to the pool.
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    async def counted(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for data in stream:
            counter.inc(len(data))
            yield data

    exported = blocks()
    if fmt is ExportFormat.CSV:
        stream = csv_text_stream(columns, exported)
    elif fmt is ExportFormat.GEOJSON:
        stream = geojson_text_stream(columns, provenance, exported)
    else:
        stream = parquet_stream(columns, arrow_schema(columns, provenance), exported,
                                pseudonymous=pseudonymous)
    stamp = f"{time_range.start:%Y%m%dT%H%M}-{time_range.end:%Y%m%dT%H%M}"
    return _ExportResponse(counted(stream), exported, media_type=_MEDIA[fmt], headers={
        "Content-Disposition": f'attachment; filename="bikesense-readings-{stamp}.{fmt.value}"',
        "Cache-Control": "private, no-store",
        "X-Bikesense-Provenance": "; ".join(f"{k}={v}" for k, v in provenance.items()),
    })
