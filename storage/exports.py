"""Raw readings for the exports, formatted by the database in blocks of whole slices.

An export is cut into *slices*: runs of whole seconds holding about
``slice_rows`` readings. For each slice one query returns the slice's rows
already encoded and in export order, as one value: CSV lines, GeoJSON
features, or fixed-width binary rows (``record_send``) for Parquet. The
database's own output functions format every value (what COPY would do), and
one message per slice replaces COPY's one message per row, whose handling in
the async driver cost more than everything else (bench/bench_export.py). Two
connections share one snapshot (``pg_export_snapshot``) and work on
alternate slices, so formatting uses two cores; memory is a few slices
whatever the size of the export.

Pseudonymous exports (researchers, docs/design.md decision 4, storage/pseudonyms.py)
name kits and rides only by their daily pseudonyms. Slices never cross a
local midnight of the deployment's time zone, so each slice's query gets the
names of its day's kits and rides, computed in Python by
:func:`storage.pseudonyms.pseudonym` and :func:`storage.pseudonyms.ride_pseudonym`
and joined as arrays: the database never sees the key, and the names are
exactly what ``storage.pseudonyms`` computes. Withheld fields
(:data:`storage.pseudonyms.WITHHELD_FIELDS`) cannot be asked for.

Each column's SQL, per encoding, is in storage/export_columns.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, LiteralString, TypeVar

import anyio
import psycopg
from psycopg import sql

from storage.correction_sql import day_corrections, export_assignments, join_sql
from storage.exceptions import QueryError
from storage.export_columns import (
    COLUMNS,
    CORRECTION_COLUMNS,
    SECOND,
    Encoding,
    binary_row_dtype,
    decode_binary_rows,
    row_sql,
)
from storage.pseudonyms import PseudonymKey, local_day_spans, pseudonym, ride_pseudonym
from storage.selection import BBox, check_time_range
from stream.core.partials import Metric

# Encoding and the binary rows' layout belong to every export's interface.
__all__ = [
    "EXPORT_CONNECTIONS",
    "Encoding",
    "ExportBlock",
    "ExportFilter",
    "Pseudonyms",
    "aiter_export_blocks",
    "binary_row_dtype",
    "decode_binary_rows",
]

_T = TypeVar("_T")


_ORDER: LiteralString = "r.ts, r.kit_id, r.boot_id, r.seq, r.idx"
# Within a second, by the names a researcher sees: an order by real ids would tell, at
# every shared second, which of two pseudonyms is the kit with the lower number.
_PSEUDONYMOUS_ORDER: LiteralString = (
    SECOND + ', m.kit_name COLLATE "C", m.ride_name COLLATE "C", r.ts, r.boot_id, r.seq, r.idx'
)

# One row per (kit, ride) of the day with both names: one hash probe per reading.
_NAMES_JOIN: LiteralString = (
    " JOIN unnest(%(kits)s::bigint[], %(rides)s::bigint[], %(kit_names)s::text[],"
    " %(ride_names)s::text[]) AS m(kit_id, ride_id, kit_name, ride_name)"
    " ON m.ride_id = r.ride_id AND m.kit_id = r.kit_id"
)

#: Connections an export works on at once (one snapshot): the database formats two
#: slices at a time, one per core of the small machine bikesense is sized for.
EXPORT_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Which readings an export holds."""

    start: datetime  # ts >= start ...
    end: datetime  # ... and ts < end
    bbox: BBox | None = None
    kit_ids: tuple[int, ...] = ()  # real kit ids (not for pseudonymous exports)
    kit_pseudonyms: frozenset[str] = frozenset()  # a kit's daily names (matches that day only)
    metric_columns: tuple[str, ...] = ()  # rows with at least one of these present

    def __post_init__(self) -> None:
        check_time_range(self.start, self.end)
        unknown = [c for c in self.metric_columns if c not in COLUMNS]
        if unknown:
            raise QueryError(f"unknown metric columns: {', '.join(unknown)}")


@dataclass(frozen=True, slots=True)
class Pseudonyms:
    """What a pseudonymous export needs: the key and the time zone of its days."""

    key: PseudonymKey = field(repr=False)
    day_tz: str


@dataclass(frozen=True, slots=True)
class ExportBlock:
    rows: int
    data: bytes
    #: Per metric (API name), the corrections in force for the kits of the block's day
    #: (versions, or a researcher's daily names of them): what its corrected columns used.
    corrections: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Statements:
    prescan: sql.Composed  # the (kit, ride) pairs of a day
    bounds: sql.Composed  # the first second of each slice of a day
    slice: sql.Composed  # one slice, encoded, as (row count, block)
    corrected: tuple[Metric, ...]  # metrics whose corrections the slices join


def _statements(
    names: Sequence[str], flt: ExportFilter, encoding: Encoding, pseudonymous: bool
) -> _Statements:
    if pseudonymous and flt.kit_ids:
        raise QueryError("pseudonymous exports filter kits by pseudonym, not by kit id")
    where: list[sql.Composable] = [sql.SQL("r.ts >= %(lo)s AND r.ts < %(hi)s")]
    if flt.bbox is not None:
        where.append(
            sql.SQL(
                "r.lat_deg BETWEEN %(south)s AND %(north)s "
                "AND r.lon_deg BETWEEN %(west)s AND %(east)s"
            )
        )
    if flt.kit_ids:
        where.append(sql.SQL("r.kit_id = ANY(%(kit_ids)s::bigint[])"))
    if flt.metric_columns:
        where.append(
            sql.SQL("({})").format(
                sql.SQL(" OR ").join(
                    sql.SQL("{} IS NOT NULL").format(sql.Identifier("r", c))
                    for c in flt.metric_columns
                )
            )
        )
    base = sql.SQL(" AND ").join(where)
    if pseudonymous and flt.kit_pseudonyms:
        # The day's kits whose names were asked for (the join alone would do for the
        # slices, but the slice bounds must count only their readings).
        base = base + sql.SQL(" AND r.kit_id = ANY(%(kits)s::bigint[])")
    prescan = sql.SQL("SELECT DISTINCT r.kit_id, r.ride_id FROM readings r WHERE {}").format(
        sql.SQL(" AND ").join(where)
    )
    # Slices are whole seconds (a researcher's times are whole seconds, ordered first), so
    # a slice holds at most slice_rows plus one second of the fleet's readings.
    bounds = sql.SQL(
        "SELECT min(sec) FROM ("
        " SELECT sec, sum(n) OVER (ORDER BY sec)::bigint AS upto FROM ("
        "  SELECT date_bin('1 second', r.ts, timestamptz '2000-01-01 00:00:00+00') AS sec,"
        "   count(*) AS n FROM readings r WHERE {} GROUP BY 1) per_second) cumulative"
        " GROUP BY (upto - 1) / %(slice_rows)s::bigint ORDER BY 1"
    ).format(base)
    order = sql.SQL(_PSEUDONYMOUS_ORDER if pseudonymous else _ORDER)
    row = row_sql(names, encoding, pseudonymous)
    if encoding is Encoding.BINARY:
        agg = sql.SQL("string_agg({}, ''::bytea ORDER BY {})").format(row, order)
    else:
        separator = sql.Literal(",\n" if encoding is Encoding.GEOJSON else "")
        # textsend: the text's bytes as bytea, so the driver hands them over undecoded.
        agg = sql.SQL("textsend(string_agg({}, {} ORDER BY {}))").format(row, separator, order)
    corrected = tuple(sorted({CORRECTION_COLUMNS[n] for n in names if n in CORRECTION_COLUMNS}))
    joins = sql.SQL("").join(join_sql(m) for m in corrected)
    slice_ = sql.SQL("SELECT count(*), {} FROM readings r{}{} WHERE {}").format(
        agg, sql.SQL(_NAMES_JOIN if pseudonymous else ""), joins, base
    )
    return _Statements(prescan, bounds, slice_, corrected)


def _day_names(
    pairs: Sequence[tuple[int, int]], day: date, key: PseudonymKey, wanted: frozenset[str]
) -> dict[str, list[Any]] | None:
    """The day's (kit, ride) pairs with their names, as the query's arrays; None when no
    wanted kit rode that day."""
    kit_names = {k: pseudonym(k, day, key) for k in {k for k, _ in pairs}}
    kept = sorted((k, r) for k, r in pairs if not wanted or kit_names[k] in wanted)
    if not kept:
        return None
    return {
        "kits": [k for k, _ in kept],
        "rides": [r for _, r in kept],
        "kit_names": [kit_names[k] for k, _ in kept],
        "ride_names": [ride_pseudonym(r, day, key) for _, r in kept],
    }


async def _slices(
    conn: psycopg.AsyncConnection[Any],
    statements: _Statements,
    flt: ExportFilter,
    pseudonyms: Pseudonyms | None,
    day_tz: str,
    slice_rows: int,
    queries: _Queries,
) -> AsyncIterator[dict[str, Any]]:
    """The parameters of each slice query, in export order."""
    base: dict[str, Any] = {"slice_rows": slice_rows}
    if flt.bbox is not None:
        bbox = flt.bbox
        base |= {"west": bbox.west, "south": bbox.south, "east": bbox.east, "north": bbox.north}
    if flt.kit_ids:
        base["kit_ids"] = list(flt.kit_ids)
    assignments = (
        await queries.run(export_assignments(conn, statements.corrected, flt.start, flt.end))
        if statements.corrected
        else {}
    )
    for day, lo, hi in local_day_spans(flt.start, flt.end, day_tz):
        params = base | {"lo": lo, "hi": hi}
        used: dict[str, frozenset[str]] = {}
        if pseudonyms is not None or assignments:
            pairs = await queries.run(_all_rows(conn, statements.prescan, params))
            kits = {int(k) for k, _ in pairs}
            if pseudonyms is not None:
                names = _day_names(pairs, day, pseudonyms.key, flt.kit_pseudonyms)
                if names is None:
                    continue
                params |= names
                kits = set(names["kits"])
            if assignments:
                key = pseudonyms.key if pseudonyms is not None else None
                corrections, used = day_corrections(assignments, kits, day, lo, hi, key)
                params |= corrections
        bounds = await queries.run(_all_rows(conn, statements.bounds, params))
        starts = [max(lo, s) for (s,) in bounds]
        for i, s in enumerate(starts):
            yield params | {
                "lo": s,
                "hi": starts[i + 1] if i + 1 < len(starts) else hi,
                _USED: used,
            }


class _Queries:
    """An export's queries, each in a task of its own, never cancelled.

    Cancelling a running query, psycopg asks the server to cancel it and waits for
    that; cancelled again meanwhile, it closes the connection (a warning in the log, a
    new connection for the pool). An export whose client went away is cancelled from
    an anyio scope (Starlette's), again at every await until it ends, and a task it
    awaits is cancelled with it each time. So a query is awaited through a shield,
    and one still running when the export ends is waited for instead (a slice or a
    day's pass: well under a second).
    """

    def __init__(self) -> None:
        self._unsettled: set[asyncio.Task[Any]] = set()

    def start(self, query: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(query)
        self._unsettled.add(task)
        return task

    async def result(self, task: asyncio.Task[_T]) -> _T:
        value = await asyncio.shield(task)
        self._unsettled.discard(task)
        return value

    async def run(self, query: Coroutine[Any, Any, _T]) -> _T:
        return await self.result(self.start(query))

    async def settle(self) -> None:
        """Wait for every query not awaited to the end, whatever it raised, even while
        the export is being cancelled."""
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*self._unsettled, return_exceptions=True)
        self._unsettled.clear()


async def _all_rows(
    conn: psycopg.AsyncConnection[Any], statement: sql.Composed, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(statement, params)
    return await cur.fetchall()


#: The slice's parameter carrying the corrections its day uses (not sent to the database).
_USED = "_corrections_used"


async def _fetch(
    conn: psycopg.AsyncConnection[Any], statement: sql.Composed, params: dict[str, Any]
) -> ExportBlock:
    used = params.pop(_USED, {})
    async with conn.cursor(binary=True) as cur:
        await cur.execute(statement, params)
        row = await cur.fetchone()
    rows, data = row if row is not None else (0, None)
    return ExportBlock(int(rows), bytes(data) if data is not None else b"", used)


async def _share_snapshot(
    conns: Sequence[psycopg.AsyncConnection[Any]], begun: list[psycopg.AsyncConnection[Any]]
) -> None:
    """One read-only REPEATABLE READ transaction per connection, all on the first one's
    snapshot: the slices, the days' names and the slice bounds see the same rows. Each
    connection goes into ``begun`` as its transaction begins, for :func:`_end_snapshot`."""
    snapshot: str | None = None
    for i, conn in enumerate(conns):
        begun.append(conn)
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if i == 0 and len(conns) > 1:
            cur = await conn.execute("SELECT pg_export_snapshot()")
            row = await cur.fetchone()
            snapshot = str(row[0]) if row else None
        elif snapshot is not None:
            await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        # Timestamps are written in UTC. A slice's sort fits in memory (tens of MB at most).
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        await conn.execute("SET LOCAL work_mem = '64MB'")


async def _end_snapshot(begun: Sequence[psycopg.AsyncConnection[Any]]) -> None:
    """End the export's transactions (read only: nothing to keep), even while the export
    is being cancelled, so that the connections go back to their pool idle. A connection
    that cannot is left to the pool, which discards it."""
    with anyio.CancelScope(shield=True):
        for conn in begun:
            with suppress(psycopg.Error):
                await conn.execute("ROLLBACK")


async def aiter_export_blocks(
    conns: Sequence[psycopg.AsyncConnection[Any]],
    names: Sequence[str],
    flt: ExportFilter,
    encoding: Encoding,
    *,
    day_tz: str,
    pseudonyms: Pseudonyms | None = None,
    slice_rows: int = 20_000,
) -> AsyncGenerator[ExportBlock]:
    """The export's rows in order, one block per slice of about ``slice_rows`` rows.

    ``conns`` are autocommit connections held for the export (one or more: see
    :data:`EXPORT_CONNECTIONS`); ``names`` the columns in order. With
    ``pseudonyms``, kits and rides are named by their daily pseudonyms (local
    days of ``pseudonyms.day_tz``) and withheld columns are refused; without,
    slices still follow the local days of ``day_tz``. CSV and GeoJSON blocks
    are UTF-8 text (GeoJSON: features separated by ",\\n", none around the
    block); binary blocks decode with :func:`decode_binary_rows`.
    """
    if not conns:
        raise QueryError("an export needs at least one connection")
    if slice_rows <= 0:
        raise QueryError(f"slice_rows must be positive (got {slice_rows})")
    statements = _statements(names, flt, encoding, pseudonyms is not None)
    tz = pseudonyms.day_tz if pseudonyms is not None else day_tz
    queries = _Queries()
    begun: list[psycopg.AsyncConnection[Any]] = []
    # One slice per connection is being formatted while the caller sends the last one.
    in_flight: deque[asyncio.Task[ExportBlock]] = deque()
    try:
        await queries.run(_share_snapshot(conns, begun))
        n = 0
        async for params in _slices(conns[0], statements, flt, pseudonyms, tz, slice_rows, queries):
            in_flight.append(queries.start(_fetch(conns[n % len(conns)], statements.slice, params)))
            n += 1
            if len(in_flight) > len(conns):
                block = await queries.result(in_flight.popleft())
                if block.rows:
                    yield block
        while in_flight:
            block = await queries.result(in_flight.popleft())
            if block.rows:
                yield block
    finally:
        # Ended early (an error, the caller gone): the slices being fetched finish
        # rather than be cancelled (_Queries says why), then the transactions end.
        await queries.settle()
        await _end_snapshot(begun)
