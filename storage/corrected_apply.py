"""Corrected aggregates computed from the raw readings and the stored corrections.

Aggregates merge the readings of many kits, and the humidity term of a correction is
not linear in a reading, so a corrected cell-window cannot be derived from the raw
one: it is made again from the raw readings (kept for the raw retention, 90 days by
default). :func:`apply_range` does so a UTC day at a time: it reads the day's
readings, corrects each with the correction in force for its kit and time
(:func:`stream.core.calibration_periods.apply_periods`), aggregates the corrected
values with the stream's own :func:`stream.core.aggregate.aggregate` (the same
publication policy, resolutions and windows as the raw aggregates, so the same
readings count) and replaces the day's rows of ``cell_windows_corrected``, in one
transaction per day. ``calibration_days`` records the versions each day was made
with; a day whose corrections have not changed since is left alone, so re-estimating
a correction re-computes the days it touches and nothing else. A day whose raw
readings have expired keeps its corrected aggregates (docs/calibration.md, "Storage").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, LiteralString

import numpy as np
import psycopg
from psycopg import sql

from storage import copybin, staging
from storage.calibration import METRIC_NAMES
from storage.cellwindows import HIST_END, HIST_OFFSET, counted_span, staged_column
from storage.corrected_windows import (
    CALIBRATED,
    COLUMNS,
    KEY_COLUMNS,
    TABLE,
    TABLE_COLUMNS,
    column,
)
from storage.corrections import CALIBRATION_LOCK_KEY, load_assignments
from stream.core.aggregate import aggregate
from stream.core.batch import ENRICHED_DTYPE
from stream.core.binning import NO_CELL
from stream.core.calibration_periods import apply_periods
from stream.core.merge import group_starts
from stream.core.partials import METRIC_COLUMNS, PARTIAL_DTYPE, Metric
from stream.core.policy import DEFAULT_POLICY, PublicationPolicy
from stream.core.resolution import quantise

_DAY = timedelta(days=1)
#: Uncertainties go through aggregate() multiplied by this (see _recompute_day).
U_SCALE = 1000.0
_KEY = ("resolution", "window_s", "window_start_ms", "cell")

_DAY_READINGS: LiteralString = """
SELECT kit_id, (extract(epoch FROM ts) * 1000)::bigint, coalesce(cell, 0), ride_id, qa_flags,
       interval_ms, coalesce(pm1_ugm3, 'NaN'), coalesce(pm25_ugm3, 'NaN'),
       coalesce(pm10_ugm3, 'NaN'), coalesce(no2_ugm3, 'NaN'),
       coalesce(humidity_pct, 'NaN'), coalesce(temperature_c, 'NaN')
FROM readings WHERE ts >= %s AND ts < %s
"""
_DAY_FIELDS = (
    "kit_id",
    "ts_ms",
    "cell",
    "ride_id",
    "qa_flags",
    "interval_ms",
    "pm1_ugm3",
    "pm25_ugm3",
    "pm10_ugm3",
    "no2_ugm3",
    "humidity_pct",
    "temperature_c",
)
# The versions that apply to a day's readings now: a period overlapping the day, of a
# kit with readings of the day.
_WANTED_VERSIONS: LiteralString = """
SELECT p.metric, array_agg(DISTINCT p.version ORDER BY p.version)
FROM calibration_periods p
WHERE p.valid_from < %(to)s AND p.valid_to > %(from)s
  AND EXISTS (SELECT 1 FROM readings r
              WHERE r.kit_id = p.kit_id AND r.ts >= %(from)s AND r.ts < %(to)s)
GROUP BY p.metric
"""
_DONE_VERSIONS: LiteralString = "SELECT metric, versions FROM calibration_days WHERE day = %s"
_HAS_READINGS: LiteralString = "SELECT EXISTS (SELECT 1 FROM readings WHERE ts >= %s AND ts < %s)"
#: A day's corrected rows are staged with their histograms' 32 bins, then stored cut to
#: their counted bins (migrations/0113), as the writer does for cell_windows.
_STAGING = staging.StagingTable("corrected_windows_staging", COLUMNS)
_PREPARE = staging.render(staging.prepare((_STAGING,)))
_COPY = staging.render(_STAGING.copy_in())
_INSERT = staging.render(
    sql.SQL("INSERT INTO {table} ({names}) SELECT {values} FROM {staging} ORDER BY {key}").format(
        table=sql.Identifier(TABLE),
        names=sql.SQL(", ").join(sql.Identifier(c) for c in TABLE_COLUMNS),
        values=sql.SQL(", ").join(staged_column(c) for c in TABLE_COLUMNS),
        staging=_STAGING.identifier,
        key=staging.column_list(KEY_COLUMNS),
    )
)


@dataclass(frozen=True, slots=True)
class ApplyReport:
    recomputed: list[date] = field(default_factory=list)  # days made again
    unchanged: list[date] = field(default_factory=list)  # corrections as when last made
    expired: list[date] = field(default_factory=list)  # no raw readings left: kept as they are
    rows: int = 0  # cell-windows written
    readings: dict[str, int] = field(default_factory=dict)  # corrected readings per metric


def _utc_day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def apply_range(
    conn: psycopg.Connection[Any],
    start: date,
    end: date,
    *,
    resolutions: Sequence[int],
    window_sizes_s: Sequence[int],
    policy: PublicationPolicy = DEFAULT_POLICY,
    force: bool = False,
) -> ApplyReport:
    """Make the corrected aggregates of the UTC days [start, end) that need it (all with
    ``force``). ``resolutions`` and ``window_sizes_s`` must be those the stream aggregates
    with (the settings' aggregation section)."""
    report = ApplyReport()
    rows = 0
    totals: dict[str, int] = {}
    day = start
    while day < end:
        lo, hi = _utc_day(day), _utc_day(day) + _DAY
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CALIBRATION_LOCK_KEY,))
            has = conn.execute(_HAS_READINGS, (lo, hi)).fetchone()
            if not (has and has[0]):
                report.expired.append(day)
            else:
                wanted = dict(conn.execute(_WANTED_VERSIONS, {"from": lo, "to": hi}).fetchall())
                done = dict(conn.execute(_DONE_VERSIONS, (day,)).fetchall())
                if not force and wanted == done:
                    report.unchanged.append(day)
                else:
                    n, used = _recompute_day(
                        conn, lo, hi, resolutions=resolutions, windows=window_sizes_s, policy=policy
                    )
                    rows += n
                    for metric, count in used.items():
                        totals[metric] = totals.get(metric, 0) + count
                    report.recomputed.append(day)
        day += timedelta(days=1)
    return ApplyReport(report.recomputed, report.unchanged, report.expired, rows, totals)


def _day_readings(conn: psycopg.Connection[Any], lo: datetime, hi: datetime) -> np.ndarray:
    rows = conn.execute(_DAY_READINGS, (lo, hi)).fetchall()
    out = np.zeros(len(rows), dtype=ENRICHED_DTYPE)
    for name in METRIC_COLUMNS.values():
        out[name] = np.nan
    out["noise_lamax_db"] = np.nan
    if rows:
        for name, values in zip(_DAY_FIELDS, zip(*rows, strict=True), strict=True):
            out[name] = values
    # Stored as float32: back to the decimals the kit sent before they are corrected.
    for metric in (*CALIBRATED, Metric.TEMPERATURE, Metric.HUMIDITY):
        out[METRIC_COLUMNS[metric]] = quantise(metric, out[METRIC_COLUMNS[metric]])
    return out


def _recompute_day(
    conn: psycopg.Connection[Any],
    lo: datetime,
    hi: datetime,
    *,
    resolutions: Sequence[int],
    windows: Sequence[int],
    policy: PublicationPolicy,
) -> tuple[int, dict[str, int]]:
    readings = _day_readings(conn, lo, hi)
    corrected = readings.copy()
    uncertainty = readings.copy()
    for name in (METRIC_COLUMNS[Metric.TEMPERATURE], METRIC_COLUMNS[Metric.HUMIDITY]):
        corrected[name] = np.nan  # covariates: not aggregated here
        uncertainty[name] = np.nan
    versions: dict[str, list[str]] = {}
    used: dict[str, int] = {}
    for metric in CALIBRATED:
        col = METRIC_COLUMNS[metric]
        assignments = load_assignments(conn, col, lo, hi)
        y, u, v = apply_periods(readings, assignments, col)
        # aggregate() rounds every value to the sensor's resolution (0.1 µg/m³), as it does
        # raw ones; the uncertainties are scaled so that rounding keeps 1e-4 of them.
        corrected[col], uncertainty[col] = y, u * U_SCALE
        name = METRIC_NAMES[col]
        versions[name] = sorted(set(v.tolist()) - {""})
        used[name] = int(np.count_nonzero(np.isfinite(y)))
    placed = corrected[corrected["cell"] != NO_CELL]
    unc_placed = uncertainty[uncertainty["cell"] != NO_CELL]
    parts, _ = aggregate(placed, resolutions, windows, policy=policy)
    u_parts, _ = aggregate(unc_placed, resolutions, windows, policy=policy)
    payload, n = _encode(parts, u_parts)
    conn.execute(
        "DELETE FROM cell_windows_corrected WHERE window_start >= %s AND window_start < %s",
        (lo, hi),
    )
    if n:
        conn.execute(_PREPARE)
        staging.copy(conn, _COPY, payload)
        conn.execute(_INSERT)
    conn.execute("DELETE FROM calibration_days WHERE day = %s", (lo.date(),))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO calibration_days (day, metric, versions, readings)"
            " VALUES (%s, %s, %s, %s)",
            [(lo.date(), m, versions[m], used[m]) for m in versions if versions[m]],
        )
    return n, used


def _encode(parts: np.ndarray, u_parts: np.ndarray) -> tuple[bytes, int]:
    """The corrected partials and their uncertainty sums as rows of ``COLUMNS``."""
    order = np.lexsort((parts["metric"], *(parts[k] for k in reversed(_KEY))))
    u_order = np.lexsort((u_parts["metric"], *(u_parts[k] for k in reversed(_KEY))))
    p, up = parts[order], u_parts[u_order]
    for k in ("metric", *_KEY, "n"):
        if not np.array_equal(p[k], up[k]):  # the same readings count in both: a bug if not
            raise AssertionError(f"corrected values and uncertainties disagree on {k}")
    firsts = group_starts(*(p[k] for k in _KEY))
    n = len(firsts)
    starts = np.zeros(len(p), dtype=bool)
    starts[firsts] = True
    row = np.cumsum(starts) - 1
    values: dict[str, np.ndarray] = {
        "resolution": p["resolution"][firsts],
        "window_s": p["window_s"][firsts],
        "window_start": copybin.ms_to_pg_timestamp(p["window_start_ms"][firsts]),
        "cell": p["cell"][firsts],
    }
    nulls: dict[str, np.ndarray] = {}
    for metric in CALIBRATED:
        mine = p["metric"] == metric
        rows, mp = row[mine], p[mine]
        for name in ("n", "sum", "sumsq", "min", "max", "hist"):
            filled = np.zeros((n, *PARTIAL_DTYPE[name].shape), dtype=PARTIAL_DTYPE[name].base)
            if name in ("min", "max"):
                filled[:] = np.nan
            filled[rows] = mp[name]
            values[column(metric, name)] = filled
        u_sum = np.zeros(n)
        u_sum[rows] = up["sum"][mine] / U_SCALE
        values[column(metric, "u_sum")] = u_sum
        empty = values[column(metric, "n")] == 0
        counted = values[column(metric, "hist")] != 0
        if np.any(~empty & ~counted.any(axis=1)):  # aggregate() bins every reading it counts
            raise AssertionError(f"a corrected {metric.api_name} partial with n > 0 and no bin")
        # The first counted bin and the one after the last: what is stored (0113).
        first, end = counted_span(counted)
        values[column(metric, HIST_OFFSET)] = first.astype(np.int16)
        values[column(metric, HIST_END)] = end.astype(np.int16)
        for name in ("hist", HIST_OFFSET, HIST_END):
            nulls[column(metric, name)] = empty
        for name in ("min", "max"):
            nulls[column(metric, name)] = np.isnan(values[column(metric, name)])
    assert len(KEY_COLUMNS) == 4
    return copybin.encode(COLUMNS, values, n, nulls), n
