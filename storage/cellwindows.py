"""How window partials are stored: one row per cell-window holding every metric's partial.

The stream hands storage partials of one metric each (``PARTIAL_DTYPE``, docs/design.md
decision 1); a batch's readings mostly carry all seven metrics, so those come in
sevens with one (resolution, cell, window) key. ``cell_windows``
(migrations/0007_cell_windows.sql) keeps the seven side by side in one row, as
columns named ``<metric>_<field>`` (``pm25_n``, ``pm25_sum``, ... ``pm25_hist``,
and the noise energy, duration and LAmax as ``noise_energy``,
``noise_duration_s``, ``noise_lamax_db``). Merging a batch then updates a
seventh of the rows it did, with one index probe and one heap tuple per
cell-window instead of seven: the writing session's upsert cost about 2.5 times
less per reading (bench/RESULTS.md).

A metric without readings in a cell-window has ``n = 0``, zero sums, NULL min,
max and histogram; a CHECK keeps ``n = 0`` and a NULL histogram together.

A histogram is stored from its first counted bin to its last
(migrations/0111_cell_windows_compact): ``<metric>_hist_offset`` is the number of
bins left out before the first, ``<metric>_hist`` the counts from there, starting
and ending with a non-zero one. ``bikesense_hist_dense(offset, hist)`` gives back
all ``HIST_BINS`` bins. The writer stages full histograms with the offset and end
that :func:`encode` finds, cuts them in the upsert, and merges stored histograms
in this form.

Readers that want the narrow shape use :func:`metric_partials`, a subquery of
one metric's partials with the column names of ``PARTIAL_DTYPE`` that the
planner flattens into their query (so the indexes still serve it), or the view
``window_partials`` for every metric at once (ad-hoc SQL, tests).
"""

from __future__ import annotations

from typing import LiteralString

import numpy as np
from psycopg import sql

from storage import copybin
from storage.copybin import Column, int4_array, scalar
from storage.exceptions import BatchError
from stream.core.merge import group_starts
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE, Metric

TABLE = "cell_windows"
#: The row key; also the primary key's column order.
KEY_COLUMNS: tuple[Column, ...] = (
    scalar("resolution", "smallint"),
    scalar("window_s", "integer"),
    scalar("window_start", "timestamptz"),
    scalar("cell", "bigint"),
)
_KEY_FIELDS = ("resolution", "window_s", "window_start_ms", "cell")
#: Every metric's fields, as in the partials (``PARTIAL_DTYPE``).
METRIC_FIELDS = ("n", "sum", "sumsq", "min", "max", "hist")
#: Noise only (docs/design.md decision 3).
NOISE_FIELDS = ("energy", "duration_s", "lamax_db")
#: Stored beside each histogram: the bins left out before its first stored one.
HIST_OFFSET = "hist_offset"
#: Staged only: the bin after the last counted one (where the stored histogram ends).
HIST_END = "hist_end"


def column(metric: Metric, field: str) -> str:
    """The name of ``metric``'s ``field`` column, e.g. ``pm25_sum``."""
    if field not in (*METRIC_FIELDS, HIST_OFFSET, HIST_END) and not (
        metric is Metric.NOISE and field in NOISE_FIELDS
    ):
        raise ValueError(f"cell_windows has no {field!r} column for {metric.api_name}")
    return f"{metric.api_name}_{field}"


def _metric_columns(metric: Metric) -> tuple[Column, ...]:
    cols: tuple[Column, ...] = (
        scalar(column(metric, "n"), "bigint"),
        scalar(column(metric, "sum"), "double precision"),
        scalar(column(metric, "sumsq"), "double precision"),
        scalar(column(metric, "min"), "double precision"),
        scalar(column(metric, "max"), "double precision"),
        int4_array(column(metric, "hist"), HIST_BINS),
        scalar(column(metric, HIST_OFFSET), "smallint"),
        scalar(column(metric, HIST_END), "smallint"),
    )
    if metric is Metric.NOISE:
        cols += tuple(scalar(column(metric, f), "double precision") for f in NOISE_FIELDS)
    return cols


#: The writer's staging table and binary COPY: the table's columns, histograms with all
#: their bins, and where each histogram's counted bins end.
COLUMNS: tuple[Column, ...] = KEY_COLUMNS + tuple(
    c for metric in Metric for c in _metric_columns(metric)
)
_HIST_COLUMNS: dict[Metric, Column] = {
    metric: next(c for c in COLUMNS if c.name == column(metric, "hist")) for metric in Metric
}
#: The table's columns (the histograms cut to their counted bins).
TABLE_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.name.endswith(HIST_END))


def encode(partials: np.ndarray) -> bytes:
    """Partials (``PARTIAL_DTYPE``) as a binary COPY of :data:`COLUMNS` rows, one per
    cell-window. Raises :class:`BatchError` if two partials share a key: the upsert
    cannot touch one row twice in a statement."""
    if partials.dtype != PARTIAL_DTYPE:
        raise TypeError(f"partials must be of PARTIAL_DTYPE, got {partials.dtype}")
    # Sorted by cell-window, then metric: a repeated key is two neighbours alike. Only
    # the keys are sorted; every value is written once, straight into its COPY row.
    order = np.lexsort((partials["metric"], *(partials[k] for k in reversed(_KEY_FIELDS))))
    keys = [partials[k][order] for k in _KEY_FIELDS]
    metrics = partials["metric"][order]
    firsts = group_starts(*keys)
    if len(group_starts(*keys, metrics)) != len(order):
        raise BatchError(
            "the aggregate callable returned several partials for one key; "
            "merge them first (stream.core.aggregate.merge_partials)"
        )
    starts = np.zeros(len(order), dtype=bool)
    starts[firsts] = True
    row = np.cumsum(starts) - 1  # each partial's cell-window
    n = len(firsts)
    placed: dict[Metric, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    nulls: dict[str, np.ndarray] = {}
    for metric in Metric:
        of_metric = metrics == metric
        at, rows = order[of_metric], row[of_metric]
        hist = partials["hist"][at]
        counted = hist != 0
        count = partials["n"][at]
        if np.any((count != 0) & ~counted.any(axis=1)):
            raise BatchError(
                f"a {metric.api_name} partial counts readings (n > 0) in no histogram bin; "
                "every reading a partial counts is in one of its bins"
            )
        placed[metric] = (at, rows, hist, counted)
        # A metric without a partial in a cell-window is NULL there but for its n and
        # sums (0), as is the histogram of a partial without readings.
        empty = _filled(n, rows, count == 0)
        for field in ("hist", HIST_OFFSET, HIST_END):
            nulls[column(metric, field)] = empty
        extremes = ("min", "max", "lamax_db") if metric is Metric.NOISE else ("min", "max")
        for field in extremes:
            nulls[column(metric, field)] = _filled(n, rows, np.isnan(partials[field][at]))
    # Rows with the same metrics absent have their NULLs in the same fields: grouped,
    # copybin cuts those out a run at a time (the upsert orders rows by key anyway).
    pattern = np.zeros(n, dtype=np.int64)
    for bit, mask in enumerate(nulls.values()):
        pattern |= mask.astype(np.int64) << bit
    laid_out = np.argsort(pattern, kind="stable")
    position = np.empty(n, dtype=np.intp)
    position[laid_out] = np.arange(n)
    out = copybin.empty_rows(COLUMNS, n)
    for name, key in zip(_KEY_FIELDS, keys, strict=True):
        first = key[firsts][laid_out]
        if name == "window_start_ms":
            out["window_start"] = copybin.ms_to_pg_timestamp(first)
        else:
            out[name] = first
    for metric, (at, rows, hist, counted) in placed.items():
        if not len(at):
            continue
        to = position[rows]
        for field in ("n", "sum", "sumsq", "min", "max"):
            out[column(metric, field)][to] = partials[field][at]
        copybin.array_elements(out, _HIST_COLUMNS[metric])[to] = hist
        # The first counted bin, and the one after the last (counted bins of an empty
        # histogram: none; it is NULL anyway).
        offset, end = counted_span(counted)
        out[column(metric, HIST_OFFSET)][to] = offset
        out[column(metric, HIST_END)][to] = end
        if metric is Metric.NOISE:
            for field in ("energy", "duration_s"):
                out[column(metric, field)][to] = np.nan_to_num(partials[field][at], nan=0.0)
            out[column(metric, "lamax_db")][to] = partials["lamax_db"][at]
    return copybin.payload(COLUMNS, out, {k: m[laid_out] for k, m in nulls.items()})


def _filled(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A mask over ``n`` cell-windows: ``values`` at ``rows``, True elsewhere."""
    mask = np.ones(n, dtype=bool)
    mask[rows] = values
    return mask


#: The merged spans the histogram merge has an expression of its own for: a merge adds
#: only the bins of the merged span, so one spanning few bins costs less than one of all
#: of them (bench/RESULTS.md, "The merge statements' CPU").
HIST_MERGE_SPANS = (1, 8, 16, 24, HIST_BINS)


def _hist_merge(metric: Metric, spans: tuple[int, ...] = HIST_MERGE_SPANS) -> sql.Composable:
    """The merged histogram, in the stored form: whichever side has one, or both added
    bin by bin over the merged span, from the first side's start to the last side's end
    (which are counted bins of the sum). The offset is the smaller one (LEAST, below).

    Unrolled, a bin an expression (about three times cheaper than a plpgsql loop per
    merged row, bench/RESULTS.md): bin ``k`` of the merged span is bin ``k + lo - o``
    of a side stored from offset ``o``, NULL outside its stored bins, so 0. The span's
    length picks the shortest of the expressions for ``spans`` bins that covers it."""
    h, o = sql.Identifier(column(metric, "hist")), sql.Identifier(column(metric, HIST_OFFSET))
    lo = sql.SQL("LEAST(w.{o}, EXCLUDED.{o})").format(o=o)
    span = sql.SQL(
        "GREATEST(w.{o} + cardinality(w.{h}), EXCLUDED.{o} + cardinality(EXCLUDED.{h})) - {lo}"
    ).format(h=h, o=o, lo=lo)

    def added(bins: int) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL(
                "coalesce(w.{h}[{k} + {lo} - w.{o}], 0)"
                " + coalesce(EXCLUDED.{h}[{k} + {lo} - EXCLUDED.{o}], 0)"
            ).format(h=h, o=o, lo=lo, k=sql.Literal(k))
            for k in range(1, bins + 1)
        )

    ladder = sql.SQL(" ").join(
        sql.SQL("WHEN {span} <= {bins} THEN {merged}").format(
            span=span,
            bins=sql.Literal(bins),
            merged=(
                sql.SQL("ARRAY[{added}]").format(added=added(1))
                if bins == 1
                else sql.SQL("(ARRAY[{added}])[1 : {span}]").format(added=added(bins), span=span)
            ),
        )
        for bins in spans[:-1]
    )
    return sql.SQL(
        "CASE WHEN EXCLUDED.{h} IS NULL THEN w.{h} WHEN w.{h} IS NULL THEN EXCLUDED.{h}"
        " {ladder} ELSE (ARRAY[{added}])[1 : {span}] END"
    ).format(h=h, ladder=ladder, added=added(spans[-1]), span=span)


def _merge_sets() -> sql.Composable:
    sets: list[sql.Composable] = []
    for metric in Metric:
        for field in ("n", "sum", "sumsq") + (
            ("energy", "duration_s") if metric is Metric.NOISE else ()
        ):
            c = sql.Identifier(column(metric, field))
            sets.append(sql.SQL("{c} = w.{c} + EXCLUDED.{c}").format(c=c))
        # LEAST / GREATEST skip NULL (a metric without readings on one side).
        extremes = [("min", "LEAST"), ("max", "GREATEST")]
        if metric is Metric.NOISE:
            extremes.append(("lamax_db", "GREATEST"))
        for field, fn in extremes:
            c = sql.Identifier(column(metric, field))
            sets.append(sql.SQL("{c} = {fn}(w.{c}, EXCLUDED.{c})").format(c=c, fn=sql.SQL(fn)))
        sets.append(
            sql.SQL("{c} = {merged}").format(
                c=sql.Identifier(column(metric, "hist")), merged=_hist_merge(metric)
            )
        )
        offset = sql.Identifier(column(metric, HIST_OFFSET))
        sets.append(sql.SQL("{c} = LEAST(w.{c}, EXCLUDED.{c})").format(c=offset))
    return sql.SQL(",\n    ").join(sets)


def counted_span(counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``counted`` (histogram bins that are not zero), the first counted bin
    and the one after the last: the slice of the histogram that is stored."""
    return np.argmax(counted, axis=1), HIST_BINS - np.argmax(counted[:, ::-1], axis=1)


def staged_column(name: str) -> sql.Composable:
    """What an upsert or insert takes from a staging table for the column ``name`` of
    ``cell_windows`` or ``cell_windows_corrected`` (the same column names): the column,
    or for a histogram its counted bins, between the staged offset and end."""
    for metric in Metric:
        if name == column(metric, "hist"):
            return sql.SQL("{h}[{o} + 1 : {e}]").format(
                h=sql.Identifier(name),
                o=sql.Identifier(column(metric, HIST_OFFSET)),
                e=sql.Identifier(column(metric, HIST_END)),
            )
    return sql.Identifier(name)


def merge_statement(staging: str) -> bytes:
    """The upsert of a staging table of :data:`COLUMNS` into ``cell_windows``: new
    cell-windows inserted, existing ones merged (counts and sums add, extremes taken,
    histograms added), in key order so concurrent writers lock rows in one order."""
    names = sql.SQL(", ").join(sql.Identifier(c) for c in TABLE_COLUMNS)
    staged = sql.SQL(", ").join(staged_column(c) for c in TABLE_COLUMNS)
    key = sql.SQL(", ").join(sql.Identifier(c.name) for c in KEY_COLUMNS)
    return (
        sql.SQL(
            "INSERT INTO {table} AS w ({names})\nSELECT {staged} FROM {staging}\nORDER BY {key}\n"
            "ON CONFLICT ({key}) DO UPDATE SET\n    {sets}"
        )
        .format(
            table=sql.Identifier(TABLE),
            names=names,
            staged=staged,
            staging=sql.Identifier(staging),
            key=key,
            sets=_merge_sets(),
        )
        .as_string()
        .encode()
    )


def metric_partials(metric: Metric) -> sql.Composed:
    """A parenthesised subquery of ``metric``'s partials in the narrow shape: the
    columns of ``PARTIAL_DTYPE`` (``window_start`` a timestamp, no ``metric``), and the
    histogram as stored too (``hist_offset``, ``hist_counted``: what
    ``storage.merged_stats.MERGED`` sums), only cell-windows with readings of it.
    Simple enough for the planner to pull up into the query around it."""
    return sql.SQL(
        "(SELECT resolution, window_s, window_start, cell, {columns},"
        " bikesense_hist_dense({offset}, {hist}) AS hist FROM {table} WHERE {n} > 0)"
    ).format(
        columns=_narrow(metric, ""),
        offset=sql.Identifier(column(metric, HIST_OFFSET)),
        hist=sql.Identifier(column(metric, "hist")),
        n=sql.Identifier(column(metric, "n")),
        table=sql.Identifier(TABLE),
    )


def pair_partials(metric: Metric, other: Metric) -> sql.Composed:
    """Like :func:`metric_partials`, two metrics side by side from the same rows:
    ``metric``'s columns under the narrow names, ``other``'s prefixed ``c_``, and every
    cell-window, with readings of either or neither (a metric without readings adds
    nothing to a merge: ``n`` and the sums 0, the rest NULL)."""
    return sql.SQL(
        "(SELECT resolution, window_s, window_start, cell, {columns}, {other} FROM {table})"
    ).format(columns=_narrow(metric, ""), other=_narrow(other, "c_"), table=sql.Identifier(TABLE))


def _narrow(metric: Metric, prefix: str) -> sql.Composed:
    """``metric``'s columns under the narrow names (``n`` ... ``lamax_db``,
    ``hist_offset``, ``hist_counted``), each with ``prefix``."""

    def col(field: str) -> sql.Composable:
        return sql.Identifier(column(metric, field))

    if metric is Metric.NOISE:
        energy, duration, lamax = col("energy"), col("duration_s"), col("lamax_db")
    else:
        energy, duration = sql.SQL("0::float8"), sql.SQL("0::float8")
        lamax = sql.SQL("NULL::float8")
    values = {
        "n": col("n"),
        "sum": col("sum"),
        "sumsq": col("sumsq"),
        "min": col("min"),
        "max": col("max"),
        "energy": energy,
        "duration_s": duration,
        "lamax_db": lamax,
        "hist_offset": col(HIST_OFFSET),
        "hist_counted": col("hist"),
    }
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(value, sql.Identifier(prefix + name))
        for name, value in values.items()
    )


def presence_weight(metric: Metric) -> sql.Composable:
    """The ``window_presence`` column that weighs a ride in ``metric``'s mean: its noise
    energy for noise (LAeq is an energy mean), its readings for the rest
    (migrations/0112_presence_shares.sql)."""
    return sql.Identifier("noise_energy" if metric is Metric.NOISE else "readings")


def per_metric(template: LiteralString) -> dict[Metric, bytes]:
    """``template`` with ``{partials}`` replaced by each metric's :func:`metric_partials`
    and ``{weight}`` by its :func:`presence_weight`: the query for every metric, rendered
    once."""
    return {
        m: sql.SQL(template)
        .format(partials=metric_partials(m), weight=presence_weight(m))
        .as_string()
        .encode()
        for m in Metric
    }
