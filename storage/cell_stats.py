"""Per-cell statistics of a selection in a bbox (the API's cells and heat map).

Each cell's figures are merged from its passing units (:mod:`storage.selection`,
:mod:`storage.merged_stats`). Comes twice: :func:`cell_stats` for
``psycopg.Connection`` and :func:`acell_stats` for ``psycopg.AsyncConnection``,
sharing the SQL and the conversions.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any, LiteralString

import numpy as np
import psycopg
from psycopg import sql

from storage.cellwindows import pair_partials, per_metric, presence_weight
from storage.corrected_windows import corrected_per_metric, pick
from storage.exceptions import QueryError
from storage.long_cells import CELLS_QUERIES, PAIR_QUERIES, rolls_up
from storage.merged_stats import (
    CELL_ROWS,
    MERGED,
    PARTIALS_IN_RANGE,
    Column,
    NumberedQuery,
    hists_of_wire,
    merged,
    numbered,
    presence_by,
    raw_hists,
    stats_of,
)
from storage.pair_rows import PAIR_AGG, PAIR_ROWS, literal_query, packed, pair_rows
from storage.selection import UNITS, WANTED_BBOX, BBox, Selection, bbox_params
from stream.core.partials import HIST_BINS, Metric

_CELLS_TEMPLATE: LiteralString = (
    "WITH "
    + WANTED_BBOX
    + ","
    + UNITS
    + """,
agg AS (SELECT u.parent AS key, """
    + MERGED
    + PARTIALS_IN_RANGE
    + """ GROUP BY u.parent),"""
    + presence_by("u.parent")
    + CELL_ROWS
)
_CELLS_QUERY = per_metric(_CELLS_TEMPLATE)
_CELLS_CORRECTED = corrected_per_metric(_CELLS_TEMPLATE)
# The partials (agg) and the rides and days (pres) of each cell come as two sets of
# rows, joined by key in Python (_joined_by_key), not in SQL: the planner cannot see
# that every unit has one cell_windows row, estimates agg at one row and joins pres to
# it in a nested loop that aggregates pres again for every cell (1.1 s for an hour of
# 1,422 cells at resolution 10, bench/bench_reads.py's backlog; 44 ms this way).


def _partials_with_presence(
    keys: np.ndarray, partials: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the partials rows (where ``partials``) that have a presence row of
    the same key, sorted by key, and of those presence rows, in the same order."""
    agg = np.flatnonzero(partials)
    agg = agg[np.argsort(keys[agg], kind="stable")]
    pres = np.flatnonzero(~partials)
    pres = pres[np.argsort(keys[pres], kind="stable")]
    at = np.minimum(np.searchsorted(keys[pres], keys[agg]), max(len(pres) - 1, 0))
    found = keys[pres][at] == keys[agg] if len(pres) else np.zeros(len(agg), dtype=bool)
    return agg[found], pres[at[found]]


def _joined_by_key(
    columns: Sequence[Sequence[Any]],
) -> tuple[list[Column], np.ndarray, np.ndarray]:
    """The columns of a cells query's rows (:func:`_columns`) as those of (key,
    partials..., rides, days, lat, lon, ride weights; the histograms as an array,
    :func:`storage.merged_stats.hists_of_wire`), sorted by key: each partials row with
    its cell's rides, days and ride weights; a cell without them (seen on fewer than the
    selection's days) left out. Also the keys of the rows as they came, and the indices
    of the rows taken, in their order."""
    keys = np.array(columns[0], dtype=np.int64)
    has_partials = np.fromiter(
        (v is not None for v in columns[1]), dtype=bool, count=len(columns[0])
    )
    agg, pres = _partials_with_presence(keys, has_partials)
    joined: list[Column] = [
        keys[agg],
        *(floats_at(columns[i], agg) for i in range(1, 9)),
        hists_of_wire([columns[9][i] for i in agg.tolist()]),
        *(floats_at(columns[i], pres) for i in (10, 11)),
        *(floats_at(columns[i], agg) for i in (12, 13)),
        *(floats_at(columns[i], pres) for i in (14, 15)),
    ]
    return joined, keys, agg


def floats_at(column: Sequence[Any], rows: np.ndarray) -> np.ndarray:
    """``column``'s values at ``rows`` (indices) as float64, None as NaN: only the rows
    taken are converted (picked by one ``itemgetter``), not the whole column (half of
    each column is the other kind of row's NULLs; about 1.5 ms of an officer's hour)."""
    picked = rows.tolist()
    if len(picked) == 1:
        return np.array([column[picked[0]]], dtype=np.float64)
    return np.array(operator.itemgetter(*picked)(column) if picked else (), dtype=np.float64)


# With a covariate (api.stats.COVARIATES: the humidity of a PM cell): the same cells,
# units and presence, the covariate's partials merged in the same pass from the same
# cell_windows rows (they hold every metric side by side), instead of a second query
# that found the same units and presence again: the covariate's query was as dear as
# the metric's (an officer's hour at resolution 10, bench/bench_reads.py). Only where
# both metrics have the same units, that is without k (keyed roles): a unit below k
# for one metric may pass for the other. Rows of either metric count; a cell is the
# metric's only if the metric has readings in its units (HAVING), as when its partials
# alone are read.
_PAIR_TEMPLATE: LiteralString = packed(
    "WITH "
    + WANTED_BBOX
    + ","
    + UNITS
    + """,
"""
    + PAIR_AGG
    + """ AS (SELECT u.parent, """
    + MERGED
    + ","
    + merged("c_", hist=False)
    + PARTIALS_IN_RANGE
    + """ GROUP BY u.parent HAVING sum(p.n) > 0),"""
    + presence_by("u.parent")
    + PAIR_ROWS
)


def _pair_query(metric: Metric, other: Metric) -> bytes:
    return (
        sql.SQL(_PAIR_TEMPLATE)
        .format(partials=pair_partials(metric, other), weight=presence_weight(metric))
        .as_string()
        .encode()
    )


#: (metric, covariate) -> the query of both (api.stats.COVARIATES' pairs).
_PAIR_QUERIES = {
    (Metric.PM1, Metric.HUMIDITY): _pair_query(Metric.PM1, Metric.HUMIDITY),
    (Metric.PM25, Metric.HUMIDITY): _pair_query(Metric.PM25, Metric.HUMIDITY),
    (Metric.PM10, Metric.HUMIDITY): _pair_query(Metric.PM10, Metric.HUMIDITY),
    (Metric.NO2, Metric.TEMPERATURE): _pair_query(Metric.NO2, Metric.TEMPERATURE),
}


def combines(sel: Selection, other: Metric) -> bool:
    """Whether ``other`` can be merged in the same pass as ``sel``
    (:func:`acell_stats_with`): a pair with a query, and a selection whose metrics all
    have the same units (no k), of raw values."""
    same_units = sel.min_rides == 0 and sel.min_days == 0 and not sel.corrected
    return same_units and (sel.metric, other) in _PAIR_QUERIES


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[Sequence[Any]]:
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _split_pair(rows: np.ndarray, sel: Selection, other: Metric) -> tuple[np.ndarray, np.ndarray]:
    """The statistics of ``sel`` and of ``other`` from a pair query's rows
    (:func:`storage.pair_rows.pair_rows`): each partials row (``n`` > 0) with its
    cell's presence row (``n`` -1), as :func:`_joined_by_key` joins them; a cell without
    presence (seen on fewer than the selection's days) left out."""
    keys = rows["key"].astype(np.int64)
    agg, pres = _partials_with_presence(keys, rows["n"] >= 0)

    def f8(name: str, at: np.ndarray) -> np.ndarray:
        column: np.ndarray = rows[name][at].astype(np.float64)
        return column

    hist = rows["hist"]["bins"]["value"]
    joined: list[Column] = [
        keys[agg],
        rows["n"][agg].astype(np.int64),
        *(f8(name, agg) for name in ("sum", "sumsq", "min", "max", "energy", "duration_s")),
        f8("lamax_db", agg),
        hist[agg].astype(np.int64),
        rows["rides"][pres].astype(np.int64),
        rows["days"][pres].astype(np.int64),
        f8("lat", agg),
        f8("lon", agg),
        f8("ride_w", pres),
        f8("ride_w_sq", pres),
    ]
    # The covariate of every partials row where it has readings, sorted by cell.
    cov = agg[rows["c_n"][agg] != 0]
    nothing = np.full(len(cov), np.nan)
    covariate: list[Column] = [
        keys[cov],
        rows["c_n"][cov].astype(np.int64),
        *(f8(f"c_{name}", cov) for name in ("sum", "sumsq", "min", "max", "energy", "duration_s")),
        f8("c_lamax_db", cov),
        np.zeros((len(cov), HIST_BINS), dtype=np.int64),  # not merged: no percentiles
        np.zeros(len(cov)),
        np.zeros(len(cov)),
        nothing,
        nothing,
        nothing,
        nothing,
    ]
    stats = stats_of(joined, sel, by_cell=True, window_s=sel.window_s)
    cov_sel = dataclasses.replace(sel, metric=other)
    return stats, stats_of(covariate, cov_sel, by_cell=True, window_s=sel.window_s)


def _pair_args(sel: Selection, other: Metric, bbox: BBox) -> tuple[NumberedQuery, dict[str, Any]]:
    if not combines(sel, other):
        raise QueryError(
            f"{other.api_name} is merged in the same pass as {sel.metric.api_name} only "
            "for its covariate pairs, on raw values without k"
        )
    queries = PAIR_QUERIES if rolls_up(sel) else _PAIR_QUERIES
    return numbered(queries[sel.metric, other]), sel.params() | bbox_params(bbox)


def cell_stats_with(
    conn: psycopg.Connection[Any], sel: Selection, other: Metric, bbox: BBox
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cell_stats` of ``sel`` and, in the same query, of ``other`` over the same
    cells and units: the statistics of ``other`` in each of ``sel``'s cells where it has
    readings, sorted by cell (their ``n``, ``mean``, ``std``, ``min`` and ``max``, from
    the same merge as :func:`acell_stats` of ``other`` gives them; ``p50``, ``p95`` and
    their bounds NaN, its histogram not merged, and ``rides``, ``days`` and the ride
    weights 0 and NaN: the covariate of an interval (``api.stats.mean_interval``) needs
    its mean and spread only, and summing its 32 bins was half of the merge). Only where
    :func:`combines`; raises QueryError otherwise."""
    query, params = _pair_args(sel, other, bbox)
    with psycopg.RawCursor(conn) as cur:
        cur.execute(literal_query(query, params, conn), binary=True)
        row = cur.fetchone()
    return _split_pair(_pair_rows_of(row), sel, other)


async def acell_stats_with(
    conn: psycopg.AsyncConnection[Any], sel: Selection, other: Metric, bbox: BBox
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cell_stats_with` for an async connection."""
    query, params = _pair_args(sel, other, bbox)
    async with psycopg.AsyncRawCursor(conn) as cur:
        await cur.execute(literal_query(query, params, conn), binary=True)
        row = await cur.fetchone()
    return _split_pair(_pair_rows_of(row), sel, other)


def _pair_rows_of(row: tuple[Any, ...] | None) -> np.ndarray:
    """The rows of a pair query's one packed row (storage.pair_rows.packed)."""
    if row is None:
        raise QueryError("the pair query returned no row")  # a bug, not bad input
    return pair_rows(int(row[0]), bytes(row[1]))


# The queries go with numbered parameters ($1, ..., storage.merged_stats.numbered) through
# a raw cursor: psycopg caches its conversion of %(name)s only for queries up to 4 kB,
# and parsed these 7 kB ones again on every request (about 4 ms of an officer's hour,
# py-spy on the API). Rows come in binary: a cell is two histograms of 32 bigints and a
# score of numbers, which psycopg decodes about 2.5 times faster than their text (9 ->
# 3.5 ms of client CPU for an officer's hour at resolution 10, bench/bench_reads.py's
# backlog).


def _query(sel: Selection) -> NumberedQuery:
    if rolls_up(sel):
        # A keyed role's long range: from the weekly roll-ups (storage.long_cells).
        return numbered(CELLS_QUERIES[sel.metric])
    return numbered(pick(_CELLS_QUERY, _CELLS_CORRECTED, sel.metric, on=sel.corrected))


def cell_stats(conn: psycopg.Connection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """Per cell whose centre is in ``bbox``: statistics over the selection (``STATS_DTYPE``),
    sorted by cell."""
    query = _query(sel)
    with psycopg.RawCursor(conn) as cur:
        raw_hists(cur)
        cur.execute(query.sql, query.args(sel.params() | bbox_params(bbox)), binary=True)
        rows = cur.fetchall()
    return stats_of(_joined_by_key(_columns(rows, 16))[0], sel, by_cell=True, window_s=sel.window_s)


async def acell_stats(conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox) -> np.ndarray:
    """:func:`cell_stats` for an async connection."""
    query = _query(sel)
    async with psycopg.AsyncRawCursor(conn) as cur:
        raw_hists(cur)
        await cur.execute(query.sql, query.args(sel.params() | bbox_params(bbox)), binary=True)
        rows = await cur.fetchall()
    return stats_of(_joined_by_key(_columns(rows, 16))[0], sel, by_cell=True, window_s=sel.window_s)
