"""Corrected values in exports, computed by the database from the core's own definition.

Exports are formatted by the database (storage/exports.py), so a reading's corrected
value is SQL there. It is not written a second time by hand: :class:`Expr` wraps an
SQL expression in Python's arithmetic operators, and the core's
:func:`stream.core.calibration_corrections.inverse_model` and
:func:`stream.core.calibration.humid_growth`, evaluated on such expressions, write the
SQL. PostgreSQL's ``float8`` arithmetic is IEEE double as numpy's is, operation by
operation, so the database computes the very value :func:`apply_correction` computes
(tests/storage/test_correction_sql.py checks it bit for bit on many readings).

Inputs are quantised to the decimals the kit sent, as :mod:`storage.corrected_apply`
does before correcting (readings are stored as ``real``): ``round(x · 10^d) / 10^d``,
which is numpy's ``round(x, d)`` operation by operation (``round(float8)`` is
``rint``, like numpy's).

The corrections in force come as arrays per metric, one element per (kit, period)
of the export's day (:func:`day_assignments`), joined to each reading by kit and time.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql

from storage.calibration import dt_of
from storage.corrections import aload_assignments
from storage.exceptions import QueryError
from storage.pseudonyms import PseudonymKey
from storage.selection import epoch_ms
from stream.core.calibration import ClipOps, humid_growth
from stream.core.calibration_corrections import inverse_model
from stream.core.calibration_periods import Assignment
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.resolution import DECIMALS

#: The metrics exports carry corrected values of (storage.corrected_windows.CALIBRATED).
CORRECTED_METRICS = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2)
#: Width of a version in binary rows (stream.core.calibration_periods.VERSION_DTYPE).
VERSION_CHARS = 40
#: A researcher's name of a correction on one local day: as long as a stored version.
VERSION_PSEUDONYM_CHARS = 26
_FIELDS = ("kit_id", "valid_from", "valid_to", "version", "o", "g", "q", "c", "rh", "tref")
_TYPES = ("bigint", "timestamptz", "timestamptz", "text", *(["float8"] * 6))


def _float(value: float) -> sql.Composable:
    return sql.SQL("{}::float8").format(sql.Literal(repr(float(value))))


def _sql(value: Expr | float | int) -> sql.Composable:
    return value.sql if isinstance(value, Expr) else _float(value)


@dataclass(frozen=True, slots=True)
class Expr:
    """A ``float8`` SQL expression with Python's arithmetic operators. A division by
    zero is NULL (numpy's is ±inf or NaN: no corrected value either way)."""

    sql: sql.Composable

    def _op(self, op: str, other: Expr | float, *, right: bool = False) -> Expr:
        a, b = (_sql(other), self.sql) if right else (self.sql, _sql(other))
        if op == "/":
            return Expr(sql.SQL("({} / NULLIF({}, 0))").format(a, b))
        return Expr(sql.SQL("({} " + op + " {})").format(a, b))

    def __add__(self, other: Expr | float) -> Expr:
        return self._op("+", other)

    def __radd__(self, other: float) -> Expr:
        return self._op("+", other, right=True)

    def __sub__(self, other: Expr | float) -> Expr:
        return self._op("-", other)

    def __rsub__(self, other: float) -> Expr:
        return self._op("-", other, right=True)

    def __mul__(self, other: Expr | float) -> Expr:
        return self._op("*", other)

    def __rmul__(self, other: float) -> Expr:
        return self._op("*", other, right=True)

    def __truediv__(self, other: Expr | float) -> Expr:
        return self._op("/", other)

    def __rtruediv__(self, other: float) -> Expr:
        return self._op("/", other, right=True)


class _SqlOps(ClipOps):
    # CASE, not least()/greatest(): those skip NULLs, and a missing humidity must stay NULL.
    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return self.minimum(self.maximum(x, lo), hi)

    def maximum(self, x: Any, lo: float) -> Any:
        v, b = _sql(x), _float(lo)
        return Expr(sql.SQL("(CASE WHEN {} < {} THEN {} ELSE {} END)").format(v, b, b, v))

    def minimum(self, x: Any, hi: float) -> Any:
        v, b = _sql(x), _float(hi)
        return Expr(sql.SQL("(CASE WHEN {} > {} THEN {} ELSE {} END)").format(v, b, b, v))


def quantised(column: str, metric: Metric) -> Expr:
    """``r.<column>`` as float8 at the decimals the kit sent (stream.core.resolution.quantise)."""
    scale = float(10 ** DECIMALS[metric])
    value = sql.SQL("{}::float8").format(sql.Identifier("r", column))
    return Expr(sql.SQL("(round({} * {}) / {})").format(value, _float(scale), _float(scale)))


def alias(metric: Metric) -> str:
    """The alias of ``metric``'s joined corrections in an export's query."""
    return f"cal_{metric.api_name}"


def corrected_sql(metric: Metric) -> Expr:
    """The corrected ``metric`` of a reading ``r`` under the joined correction; NULL
    without one, or without the humidity or temperature it needs (as apply_correction)."""
    a = alias(metric)

    def p(name: str) -> Expr:
        return Expr(sql.Identifier(a, name))

    q, c = p("q"), p("c")
    # A term the correction does not have needs no covariate (apply_correction's _covariate).
    h = humid_growth(quantised("humidity_pct", Metric.HUMIDITY), p("rh"), _SqlOps())
    h_sql = Expr(sql.SQL("(CASE WHEN {} = 0 THEN 0::float8 ELSE {} END)").format(q.sql, h.sql))
    dt = quantised("temperature_c", Metric.TEMPERATURE) - p("tref")
    dt_sql = Expr(sql.SQL("(CASE WHEN {} = 0 THEN 0::float8 ELSE {} END)").format(c.sql, dt.sql))
    raw = quantised(METRIC_COLUMNS[metric], metric)
    y: Expr = inverse_model(raw, p("o"), p("g"), q, c, h_sql, dt_sql)
    return y


def version_sql(metric: Metric) -> sql.Composable:
    """The version (or a researcher's daily name of it) where the value is corrected."""
    return sql.SQL("CASE WHEN {} IS NOT NULL THEN {} END").format(
        corrected_sql(metric).sql, sql.Identifier(alias(metric), "version")
    )


def join_sql(metric: Metric) -> sql.Composable:
    """The join of ``metric``'s corrections of the slice's day to each reading ``r``."""
    a = alias(metric)
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(f"{a}_{f}"), sql.SQL(t))
        for f, t in zip(_FIELDS, _TYPES, strict=True)
    )
    return sql.SQL(
        " LEFT JOIN unnest({arrays}) AS {a}({fields})"
        " ON {kit} = r.kit_id AND r.ts >= {lo} AND r.ts < {hi}"
    ).format(
        arrays=arrays,
        a=sql.Identifier(a),
        fields=sql.SQL(", ").join(map(sql.Identifier, _FIELDS)),
        kit=sql.Identifier(a, "kit_id"),
        lo=sql.Identifier(a, "valid_from"),
        hi=sql.Identifier(a, "valid_to"),
    )


def version_pseudonym(version: str, day: date, key: PseudonymKey) -> str:
    """A researcher's name of a correction on ``day``: a kit's own correction applies over
    several days, and its version would link the kit's daily pseudonyms (docs/api.md)."""
    digest = key.digest(f"correction:{version}:{day.isoformat()}")
    return "c-" + base64.b32encode(digest).decode().lower()[: VERSION_PSEUDONYM_CHARS - 2]


def day_assignments(
    metric: Metric,
    assignments: Sequence[Assignment],
    lo_ms: int,
    hi_ms: int,
    names: dict[str, str] | None = None,
) -> dict[str, list[Any]]:
    """The query parameters of ``metric``'s corrections over [lo_ms, hi_ms): each
    assignment overlapping it, versions renamed by ``names`` when given. Overlapping
    periods of one kit are refused: a reading would be exported twice."""

    a = alias(metric)
    out: dict[str, list[Any]] = {f"{a}_{f}": [] for f in _FIELDS}
    kept = sorted(
        (x for x in assignments if x.start_ms < hi_ms and x.end_ms > lo_ms),
        key=lambda x: (x.kit_id, x.start_ms),
    )
    for prev, this in pairwise(kept):
        if prev.kit_id == this.kit_id and this.start_ms < prev.end_ms:
            raise QueryError(f"kit {this.kit_id} has overlapping correction periods for {metric}")
    for x in kept:
        corr = x.correction
        row = (
            x.kit_id,
            dt_of(max(x.start_ms, lo_ms)),
            dt_of(min(x.end_ms, hi_ms)),
            names[corr.version] if names is not None else corr.version,
            *corr.params,
            corr.humid_rh_pct,
            corr.temperature_ref_c,
        )
        for f, v in zip(_FIELDS, row, strict=True):
            out[f"{a}_{f}"].append(v)
    return out


async def export_assignments(
    conn: psycopg.AsyncConnection[Any], metrics: Sequence[Metric], start: datetime, end: datetime
) -> dict[Metric, list[Assignment]]:
    """The corrections in force over the export's range, per metric, in its snapshot."""
    return {m: await aload_assignments(conn, METRIC_COLUMNS[m], start, end) for m in metrics}


def day_corrections(
    assignments: dict[Metric, list[Assignment]],
    kits: set[int],
    day: date,
    lo: datetime,
    hi: datetime,
    key: PseudonymKey | None,
) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
    """The slices' parameters for the day's corrections (of ``kits``, those with readings
    the export holds), and the versions they use; with ``key``, each version by its daily
    name (storage/correction_sql.py says why)."""
    params: dict[str, Any] = {}
    used: dict[str, frozenset[str]] = {}
    lo_ms, hi_ms = epoch_ms(lo), epoch_ms(hi)
    for metric, every in assignments.items():
        mine = [a for a in every if a.kit_id in kits and a.start_ms < hi_ms and a.end_ms > lo_ms]
        names = (
            {a.correction.version: version_pseudonym(a.correction.version, day, key) for a in mine}
            if key is not None
            else None
        )
        params |= day_assignments(metric, mine, lo_ms, hi_ms, names)
        versions = {a.correction.version for a in mine}
        used[metric.api_name] = (
            frozenset(names[v] for v in versions) if names else frozenset(versions)
        )
    return params, used
