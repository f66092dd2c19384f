"""Corrected aggregates beside the raw ones: the table, and how reads select from it.

``cell_windows_corrected`` (migrations/0110_calibration.sql) has ``cell_windows``'
shape for the calibrated metrics (PM1, PM2.5, PM10, NO2): per cell-window the
partials of the *corrected* values of the same readings, plus ``<metric>_u_sum``,
the sum of the readings' correction uncertainties (docs/calibration.md,
"Intervals"). :mod:`storage.corrected_apply` writes it from the raw readings and the
stored corrections, a UTC day at a time. Since migration 0113 its histograms are
stored as ``cell_windows``' are (``storage.cellwindows``): from the first counted bin
to the last, with ``<metric>_hist_offset`` bins left out before;
``bikesense_hist_dense`` gives the 32 bins back to readers.

A corrected row is shown only where it stands for exactly the readings of the raw
row beside it (the same count: corrected values are a subset of the raw ones, so the
same count is the same readings). A reading without a corrected value (no correction
in force, or no humidity where the correction needs it), or one stored after the day
was corrected, makes the cell-window absent from the corrected view until it is
corrected again, never a mean of fewer readings under the raw one's name. For the
public this keeps the privacy rules exactly those of raw values: a corrected unit is
the same readings, the same rides and days, as a raw unit that passed k
(docs/privacy.md), and figures are merged from such units only.

Reads take :func:`corrected_partials` where raw reads take
``storage.cellwindows.metric_partials``: the same column names, with the uncertainty
sum in the ``energy`` column, which concentrations do not use
(:func:`corrected_per_metric`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from storage.cellwindows import HIST_END, HIST_OFFSET, presence_weight
from storage.copybin import Column, int4_array, scalar
from storage.exceptions import QueryError
from stream.core.partials import HIST_BINS, Metric

TABLE = "cell_windows_corrected"
#: The metrics a reference station calibrates (stream.core.calibration.CALIBRATED_METRICS).
CALIBRATED = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2)
KEY_COLUMNS: tuple[Column, ...] = (
    scalar("resolution", "smallint"),
    scalar("window_s", "integer"),
    scalar("window_start", "timestamptz"),
    scalar("cell", "bigint"),
)
METRIC_FIELDS = ("n", "sum", "sumsq", "min", "max", "hist", "u_sum", HIST_OFFSET)


def column(metric: Metric, field: str) -> str:
    if metric not in CALIBRATED or field not in (*METRIC_FIELDS, HIST_END):
        raise ValueError(f"{TABLE} has no {field!r} column for {metric.api_name}")
    return f"{metric.api_name}_{field}"


#: What storage.corrected_apply stages: the table's columns with every histogram's 32
#: bins, and where its counted bins end.
COLUMNS: tuple[Column, ...] = KEY_COLUMNS + tuple(
    c
    for m in CALIBRATED
    for c in (
        scalar(column(m, "n"), "bigint"),
        scalar(column(m, "sum"), "double precision"),
        scalar(column(m, "sumsq"), "double precision"),
        scalar(column(m, "min"), "double precision"),
        scalar(column(m, "max"), "double precision"),
        int4_array(column(m, "hist"), HIST_BINS),
        scalar(column(m, "u_sum"), "double precision"),
        scalar(column(m, HIST_OFFSET), "smallint"),
        scalar(column(m, HIST_END), "smallint"),
    )
)
#: The table's columns (the histograms cut to their counted bins).
TABLE_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.name.endswith(HIST_END))


def check_calibrated(metric: Metric) -> None:
    if metric not in CALIBRATED:
        names = ", ".join(m.api_name for m in CALIBRATED)
        raise QueryError(
            f"{metric.api_name} has no corrected values: reference stations calibrate {names}"
        )


def _complete(metric: Metric, alias: str) -> sql.Composed:
    """The corrected row ``alias`` has readings of ``metric`` and exactly the raw row's."""
    n = sql.Identifier(column(metric, "n"))
    return sql.SQL("{a}.{n} > 0 AND {a}.{n} = w.{n}").format(a=sql.Identifier(alias), n=n)


def corrected_partials(metric: Metric) -> sql.Composed:
    """``metric``'s corrected partials as a subquery in the narrow shape of
    ``storage.cellwindows.metric_partials`` (``energy`` holds Σ u), complete rows only."""
    check_calibrated(metric)

    def col(field: str) -> sql.Composable:
        return sql.SQL("c.{}").format(sql.Identifier(column(metric, field)))

    return sql.SQL(
        "(SELECT c.resolution, c.window_s, c.window_start, c.cell, {n} AS n, {sum} AS sum,"
        " {sumsq} AS sumsq, {min} AS min, {max} AS max, {u} AS energy,"
        " 0::float8 AS duration_s, NULL::float8 AS lamax_db, {hist} AS hist,"
        " 0::smallint AS hist_offset, {hist} AS hist_counted"
        " FROM {table} c JOIN cell_windows w"
        " USING (resolution, window_s, window_start, cell) WHERE {complete})"
    ).format(
        n=col("n"),
        sum=col("sum"),
        sumsq=col("sumsq"),
        min=col("min"),
        max=col("max"),
        u=col("u_sum"),
        hist=sql.SQL("bikesense_hist_dense({}, {})").format(col(HIST_OFFSET), col("hist")),
        table=sql.Identifier(TABLE),
        complete=_complete(metric, "c"),
    )


def _unit_complete(metric: Metric) -> sql.Composed:
    """A unit of ``storage.selection.UNITS`` (alias r) whose corrected row is complete."""
    return sql.SQL(
        "AND EXISTS (SELECT 1 FROM {table} c JOIN cell_windows w"
        " USING (resolution, window_s, window_start, cell)"
        " WHERE c.resolution = r.resolution AND c.window_s = r.window_s"
        " AND c.window_start = r.window_start AND c.cell = r.cell AND {complete})"
    ).format(table=sql.Identifier(TABLE), complete=_complete(metric, "c"))


#: Where a unit's conditions end in storage.selection.UNITS: the corrected queries add
#: theirs there.
_UNITS_END = "\n        OFFSET 0) r"


def corrected_per_metric(template: LiteralString) -> dict[Metric, bytes]:
    """``template`` (a query of ``storage.cellwindows.per_metric``) for each calibrated
    metric's corrected partials; its units, if any, only those with a complete corrected
    row, so that rides and days are counted over the units shown."""
    count = template.count(_UNITS_END)
    if count > 1:
        raise ValueError("a template with the units twice")  # a bug, not bad input
    out = {}
    for m in CALIBRATED:
        text: LiteralString = template
        if count:
            text = template.replace(_UNITS_END, "\n          {complete}" + _UNITS_END)
        out[m] = (
            sql.SQL(text)
            .format(
                partials=corrected_partials(m),
                complete=_unit_complete(m),
                weight=presence_weight(m),
            )
            .as_string()
            .encode()
        )
    return out


def pick(
    raw: dict[Metric, bytes], corrected: dict[Metric, bytes], metric: Metric, *, on: bool
) -> bytes:
    """The raw or the corrected query of ``metric``."""
    if not on:
        return raw[metric]
    check_calibrated(metric)
    return corrected[metric]


# -- what the corrected figures were made with -------------------------------------

_VERSIONS: LiteralString = """
SELECT DISTINCT v FROM calibration_days d CROSS JOIN LATERAL unnest(d.versions) AS v
WHERE d.metric = %(metric)s
  AND d.day < (%(end)s AT TIME ZONE 'UTC') AND d.day + 1 > (%(start)s AT TIME ZONE 'UTC')
ORDER BY v
"""
_CORRECTED_METRICS: LiteralString = (
    "SELECT DISTINCT metric FROM calibration_days WHERE readings > 0 ORDER BY metric"
)


async def acorrected_versions(
    conn: psycopg.AsyncConnection[Any], metric: Metric, start: datetime, end: datetime
) -> list[str]:
    """The versions of the corrections the corrected aggregates of the UTC days that
    [start, end) touches were made with (``calibration_days``)."""
    cur = await conn.execute(_VERSIONS, {"metric": metric.api_name, "start": start, "end": end})
    return [str(row[0]) for row in await cur.fetchall()]


async def acorrected_metrics(conn: psycopg.AsyncConnection[Any]) -> list[Metric]:
    """The metrics with corrected aggregates stored."""
    cur = await conn.execute(_CORRECTED_METRICS)
    return [Metric.from_api_name(row[0]) for row in await cur.fetchall()]
