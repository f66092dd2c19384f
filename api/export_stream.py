"""Raw-reading exports: from a checked request to a streamed response, whatever the size.

:func:`open_export` turns an :class:`ExportRequest` (parameters parsed, the
caller's identities decided by :mod:`api.privacy`) into an :class:`Export`:
the body, rendered by the format's module in :mod:`api.render`, the media
type, the file name and the provenance (:mod:`api.provenance`). Nothing runs
until the body is read.

Connections are taken when the body starts, not as a request dependency, so
they live as long as the stream: one, and up to ``storage.exports.EXPORT_CONNECTIONS``
when the pool has them free at once, so an export never waits for, nor starves
other requests of, its extra connections. :class:`ExportResponse` closes the
export however the stream ends (finished, failed, or cancelled because the
client went away) before it returns, shielded from the cancellation: the
export's queries end and its connections go back to the pool idle, now, and
not whenever the generators are garbage collected (in tasks of their own, in
any order, where closing them raced). docs/api.md says why cancelling the
running queries instead would cost a connection each.

An export either completes or visibly fails. Once the head is sent, a failure
(the database connection lost, a query refused) can no longer become an error
response: :class:`ExportResponse` logs it and raises :class:`ExportCutShortError`,
and the server closes the connection without the body's terminating chunk, so
every HTTP client reports an incomplete transfer (curl exits non-zero). A
client never gets a truncated file that looks whole, and a file saved anyway
lacks the statement every format ends with that the export is whole
(:mod:`api.render.completion`). An export whose client
takes no data for ``send_timeout_s`` is aborted the same way, and its
connections go back to the pool (api/database.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import anyio
import psycopg
from fastapi.responses import StreamingResponse
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import Message, Receive, Scope, Send

from api.export_slots import ExportSlot, ExportSlots
from api.privacy import Identities
from api.provenance import Provenance, export_provenance, provenance_header
from api.pseudonym_key import PseudonymKeys
from api.render.columns import export_columns
from api.render.csv_text import csv_text_stream
from api.render.geojson import geojson_text_stream
from api.render.parquet import arrow_schema, binary_columns, parquet_stream
from bikesense.exceptions import BikesenseError
from storage.exports import (
    EXPORT_CONNECTIONS,
    Encoding,
    ExportBlock,
    ExportFilter,
    Pseudonyms,
    aiter_export_blocks,
)
from storage.selection import BBox
from stream.core.partials import METRIC_COLUMNS, Metric

log = logging.getLogger(__name__)

#: Rows per slice (at most ``export_batch_rows``): a slice is one block in memory, three
#: or four of them at a time (CSV about 200 bytes a row, GeoJSON 600, binary rows 300).
_SLICE_ROWS = {Encoding.CSV: 20_000, Encoding.GEOJSON: 8_000, Encoding.BINARY: 20_000}
#: A second connection for an export is taken only if the pool has one or can open one soon.
_SECOND_CONNECTION_WAIT_S = 0.5


class ExportCutShortError(BikesenseError):
    """An export failed after its head was sent; the response is aborted, not ended."""


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    GEOJSON = "geojson"


_MEDIA = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
    ExportFormat.GEOJSON: "application/geo+json",
}
_ENCODING = {
    ExportFormat.CSV: Encoding.CSV,
    ExportFormat.GEOJSON: Encoding.GEOJSON,
    ExportFormat.PARQUET: Encoding.BINARY,
}


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export, parsed and checked."""

    fmt: ExportFormat
    start: datetime
    end: datetime
    bbox: BBox | None = None
    metrics: tuple[Metric, ...] = ()  # empty: all
    kit_ids: tuple[int, ...] = ()  # admins' filter; empty: all
    kit_pseudonyms: frozenset[str] = frozenset()  # researchers' filter; empty: all


@dataclass(frozen=True, slots=True)
class ExportSource:
    """Where an export reads from, and how it slices and counts."""

    pool: AsyncConnectionPool
    keys: PseudonymKeys
    day_tz: str
    batch_rows: int
    timeout_s: float  # to wait for the first connection
    send_timeout_s: float  # to wait for the client to take a chunk
    bytes_sent: Counter  # labelled by format


@dataclass(frozen=True, slots=True)
class Export:
    body: AsyncIterator[bytes]
    blocks: AsyncGenerator[ExportBlock]  # what the body reads; closed by ExportResponse
    media_type: str
    filename: str
    provenance: Provenance
    send_timeout_s: float


def open_export(
    source: ExportSource, request: ExportRequest, identities: Identities, *, now: datetime
) -> Export:
    """The export ``request`` asks for, showing ``identities``; nothing runs until the
    body is read. A pseudonym key that cannot be read is a 503 here, before any byte."""
    pseudonymous = identities is Identities.PSEUDONYMS
    pseudonyms = Pseudonyms(source.keys.get(), source.day_tz) if pseudonymous else None
    chosen = sorted(set(request.metrics))
    columns = export_columns(chosen or list(Metric), pseudonymous=pseudonymous)
    flt = ExportFilter(
        start=request.start,
        end=request.end,
        bbox=request.bbox,
        kit_ids=request.kit_ids,
        kit_pseudonyms=request.kit_pseudonyms,
        metric_columns=tuple(METRIC_COLUMNS[m] for m in chosen)
        if 0 < len(chosen) < len(Metric)
        else (),
    )
    provenance = export_provenance(
        exported_at=now,
        start=request.start,
        end=request.end,
        bbox=request.bbox,
        metrics=[m.api_name for m in chosen],
        kits=sorted(request.kit_pseudonyms) if pseudonymous else map(str, request.kit_ids),
        identities=identities,
        day_tz=source.day_tz,
    )
    encoding = _ENCODING[request.fmt]
    blocks = _blocks(
        source,
        binary_columns(columns) if encoding is Encoding.BINARY else [c.name for c in columns],
        flt,
        encoding,
        pseudonyms=pseudonyms,
        slice_rows=min(source.batch_rows, _SLICE_ROWS[encoding]),
    )
    if request.fmt is ExportFormat.CSV:
        body = csv_text_stream(columns, provenance, blocks)
    elif request.fmt is ExportFormat.GEOJSON:
        body = geojson_text_stream(columns, provenance, blocks)
    else:
        body = parquet_stream(
            columns, arrow_schema(columns, provenance), blocks, pseudonymous=pseudonymous
        )
    stamp = f"{request.start:%Y%m%dT%H%M}-{request.end:%Y%m%dT%H%M}"
    return Export(
        body=_counted(body, source.bytes_sent.labels(request.fmt.value)),
        blocks=blocks,
        media_type=_MEDIA[request.fmt],
        filename=f"bikesense-readings-{stamp}.{request.fmt.value}",
        provenance=provenance,
        send_timeout_s=source.send_timeout_s,
    )


async def _connections(
    stack: AsyncExitStack, pool: AsyncConnectionPool, timeout_s: float
) -> list[psycopg.AsyncConnection[Any]]:
    """One connection, and more only if the pool has them free right away."""
    conns = [await stack.enter_async_context(pool.connection(timeout=timeout_s))]
    while len(conns) < min(EXPORT_CONNECTIONS, pool.max_size - 1):
        try:
            conns.append(
                await stack.enter_async_context(pool.connection(timeout=_SECOND_CONNECTION_WAIT_S))
            )
        except PoolTimeout:
            break
    return conns


async def _blocks(
    source: ExportSource,
    names: list[str],
    flt: ExportFilter,
    encoding: Encoding,
    *,
    pseudonyms: Pseudonyms | None,
    slice_rows: int,
) -> AsyncGenerator[ExportBlock]:
    stack = AsyncExitStack()
    try:
        # Shielded like the clean-up below: the pool checks a connection with a
        # query as it hands it out (waiting at most timeout_s for one).
        with anyio.CancelScope(shield=True):
            conns = await _connections(stack, source.pool, source.timeout_s)
        async with aclosing(
            aiter_export_blocks(
                conns,
                names,
                flt,
                encoding,
                day_tz=source.day_tz,
                pseudonyms=pseudonyms,
                slice_rows=slice_rows,
            )
        ) as exported:
            async for block in exported:
                yield block
    finally:
        # Shielded: a stream whose client went away is cancelled again at every await
        # (anyio), and the connections must still go back to the pool.
        with anyio.CancelScope(shield=True):
            await stack.aclose()


async def _counted(body: AsyncIterator[bytes], counter: Counter) -> AsyncIterator[bytes]:
    async for data in body:
        counter.inc(len(data))
        yield data


async def export_response(export: Export, slots: ExportSlots, key: str) -> ExportResponse:
    """``export`` as a response on a slot of ``key``'s (waiting briefly for one), or the
    refusal (429 or 503, :mod:`api.export_slots`)."""
    slot = await slots.acquire(key)
    try:
        return ExportResponse(export, slot)
    except BaseException:
        slot.release()
        raise


class ExportResponse(StreamingResponse):
    """An export as a streamed response that closes the export itself, however the
    stream ends (see the module docstring). It holds one of the exports' slots
    (:mod:`api.export_slots`) and gives it back when the response ends, however it
    ends; build it with :func:`export_response`."""

    def __init__(self, export: Export, slot: ExportSlot) -> None:
        super().__init__(
            export.body,
            media_type=export.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{export.filename}"',
                "Cache-Control": "private, no-store",
                "X-Bikesense-Provenance": provenance_header(export.provenance),
            },
        )
        self._blocks = export.blocks
        self._filename = export.filename
        self._send_timeout_s = export.send_timeout_s
        self._sent = 0
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()

    async def stream_response(self, send: Send) -> None:
        async def counting_send(message: Message) -> None:
            # A client that takes nothing for send_timeout_s would otherwise hold the
            # export's connections, idle in transaction, for as long as it stays.
            with anyio.fail_after(self._send_timeout_s):
                await send(message)
            self._sent += len(message.get("body", b""))

        try:
            await super().stream_response(counting_send)
        except Exception as exc:
            # Not translated to an error response: the head is out. Raising on makes
            # the server drop the connection without the terminating chunk.
            log.warning("export %s cut short after %d bytes: %s", self._filename, self._sent, exc)
            msg = f"export {self._filename} cut short after {self._sent} bytes"
            raise ExportCutShortError(msg) from exc
        finally:
            with anyio.CancelScope(shield=True):
                await self._blocks.aclose()
