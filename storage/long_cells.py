"""Per-cell statistics of a long range from the weekly roll-ups (:mod:`storage.rollups`).

Only for selections without k, of raw values, merged from daily windows of their own
resolution (:func:`rolls_up`: the keyed roles' long ranges); the public's figures are
merged from the units that passed k and never from a roll-up, which holds every unit.
Each rolled-up week whose days lie in the range gives its one row per cell; the days of
the range outside such weeks, and weeks not rolled up (not over yet, or changed since
by late data until the next refresh), come from the daily windows as before. A week's
presence is used only where every daily window holding presence of its rides is in the
range; the rest is counted from the daily presence rows of the other weeks' rides. A
ride is in one week (its day's), so distinct rides and days add up over weeks exactly.

The rows are those of :mod:`storage.cell_stats`' queries, in the same shape: partials
per cell, then rides, days and ride weights per cell, joined in Python.
"""

from __future__ import annotations

from typing import LiteralString

from psycopg import sql

from storage.cellwindows import metric_partials, pair_partials, presence_weight
from storage.merged_stats import CELL_ROWS, MERGED, merged
from storage.pair_rows import PAIR_AGG, PAIR_ROWS, packed
from storage.selection import WANTED_BBOX, Selection
from stream.core.partials import Metric

DAY_S = 86_400
#: A range shorter than this holds no whole week worth the extra query.
MIN_RANGE_S = 14 * DAY_S


def rolls_up(sel: Selection) -> bool:
    """Whether :mod:`storage.cell_stats` answers ``sel`` from the weekly roll-ups: no k,
    raw values, daily windows as its own units, and a range of two weeks or more."""
    return (
        sel.min_rides == 0
        and not sel.corrected
        and sel.window_s == DAY_S
        and sel.units == (sel.resolution, DAY_S)
        and (sel.end - sel.start).total_seconds() >= MIN_RANGE_S
    )


_EPOCH: LiteralString = "timestamptz '1970-01-01 00:00:00+00'"

# The rolled-up weeks usable for the partials (all of their days in the range) and for
# the presence (every daily window holding presence of their rides in the range).
_WEEKS: LiteralString = (
    """
weeks AS (
    SELECT week, """
    + _EPOCH
    + """ + make_interval(days => 7 * week) AS week_start,
           """
    + _EPOCH
    + """ + make_interval(days => 7 * week + days) AS week_end
    FROM rollup_weeks
    WHERE resolution = %(res)s
      AND """
    + _EPOCH
    + """ + make_interval(days => 7 * week) >= %(start)s
      AND """
    + _EPOCH
    + """ + make_interval(days => 7 * week + days) <= %(end)s),
pweeks AS (
    SELECT week, 7 * week::bigint AS first_day, 7 * week::bigint + days AS end_day
    FROM rollup_weeks
    WHERE resolution = %(res)s AND presence_from >= %(start)s AND presence_to < %(end)s),
gaps AS (
    -- The parts of the range between the rolled-up days, read from the daily windows.
    SELECT lo, hi FROM (
        SELECT coalesce(lag(week_end) OVER (ORDER BY week_start), %(start)s) AS lo,
               week_start AS hi
        FROM weeks
        UNION ALL
        SELECT coalesce((SELECT max(week_end) FROM weeks), %(start)s), %(end)s) g
    WHERE lo < hi),
day_gaps AS (
    -- The days outside those whose presence is rolled up: ranges of the presence key's
    -- last column, checked in the index before any row is fetched; and of its windows.
    -- A ride's windows start on or after the UTC day before its local day (time zones
    -- are at most 14 h ahead of UTC), and no later than the last window its week's
    -- roll-up or marks name: every presence row is in its week's roll-up or marked by
    -- the writer since (storage.rollups); unknown presence (before migration 0112)
    -- bounds nothing. A gap of days no roll-up or mark holds has no rows.
    SELECT lo, hi,
           CASE WHEN lo > -2147483648
                THEN """
    + _EPOCH
    + """ + make_interval(days => (lo - 1)::integer)
                ELSE '-infinity' END AS w_lo,
           (SELECT CASE WHEN bool_or(unknown) THEN 'infinity' ELSE max(w) END
            FROM (SELECT presence_to AS w, presence_unknown AS unknown FROM rollup_weeks
                  WHERE resolution = %(res)s AND 7 * week::bigint + 6 >= lo
                    AND 7 * week::bigint < hi
                  UNION ALL
                  SELECT last_window, false FROM rollup_marks
                  WHERE resolution = %(res)s AND 7 * week::bigint + 6 >= lo
                    AND 7 * week::bigint < hi) b) AS w_hi
    FROM (
        SELECT coalesce(lag(end_day) OVER (ORDER BY week), -2147483648) AS lo,
               first_day AS hi
        FROM pweeks
        UNION ALL
        SELECT coalesce((SELECT max(end_day) FROM pweeks), -2147483648), 2147483648) g
    WHERE lo < hi)"""
)

# {daily} / {weekly}: the metric's (or the pair's) partials of cell_windows and of
# weekly_cell_windows, in the narrow shape. The daily ones are read by the gaps between
# the rolled-up weeks, a range of the window start each: filtered by week instead, every
# daily row of the range was fetched and most thrown away (400 days of an officer's
# cells at resolution 10, bench/bench_reads.py's backlog: 145 ms of 392 in EXPLAIN
# ANALYZE, bench/RESULTS.md).
_PARTIALS: LiteralString = """
src AS (
    SELECT p.* FROM {weekly} p
    WHERE p.resolution = %(res)s AND p.window_s = 604800
      AND p.window_start IN (SELECT week_start FROM weeks)
      AND p.cell IN (SELECT cell FROM wanted)
    UNION ALL
    SELECT p.* FROM {daily} p JOIN gaps g ON p.window_start >= g.lo AND p.window_start < g.hi
    WHERE p.resolution = %(res)s AND p.window_s = 86400
      AND p.window_start >= %(start)s AND p.window_start < %(end)s
      AND p.cell IN (SELECT cell FROM wanted))"""

# As storage.merged_stats.presence_by over the daily presence rows of the rides whose
# week is not in pweeks, plus the roll-ups of those that are.
_PRESENCE: LiteralString = """
per_ride AS (
    SELECT key, ride_id, day, w, unknown, sum(w) OVER (PARTITION BY key, ride_id) AS ride_w
    FROM (SELECT pr.cell AS key, pr.ride_id, pr.day, sum(pr.{weight})::float8 AS w,
                 bool_or(pr.{weight} IS NULL) AS unknown
          FROM window_presence pr JOIN day_gaps g ON pr.day >= g.lo AND pr.day < g.hi
               AND pr.window_start >= g.w_lo AND pr.window_start <= g.w_hi
          WHERE pr.resolution = %(res)s AND pr.window_s = 86400
            AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
            AND pr.cell = ANY (ARRAY(SELECT cell FROM wanted))
            AND (pr.metrics >> %(metric)s) & 1 = 1
          GROUP BY 1, 2, 3) g),
daily_pres AS (
    SELECT key, count(DISTINCT ride_id) AS rides, count(DISTINCT day) AS days,
           CASE WHEN bool_or(unknown) THEN NULL ELSE sum(w) END AS ride_w,
           CASE WHEN bool_or(unknown) THEN NULL ELSE sum(w * ride_w) END AS ride_w_sq
    FROM per_ride GROUP BY key),
pres AS (
    SELECT key, sum(rides)::bigint AS rides, sum(days)::bigint AS days,
           CASE WHEN count(*) = count(ride_w) THEN sum(ride_w) END AS ride_w,
           CASE WHEN count(*) = count(ride_w) THEN sum(ride_w_sq) END AS ride_w_sq
    FROM (SELECT * FROM daily_pres
          UNION ALL
          SELECT wp.cell, wp.rides, wp.days, wp.ride_w, wp.ride_w_sq
          FROM weekly_presence wp
          WHERE wp.resolution = %(res)s AND wp.metric = %(metric)s
            AND wp.week IN (SELECT week FROM pweeks)
            AND wp.cell IN (SELECT cell FROM wanted)) x
    GROUP BY key)"""

_HEAD: LiteralString = "WITH " + WANTED_BBOX + "," + _WEEKS + "," + _PARTIALS + ","

_CELLS_TEMPLATE: LiteralString = (
    _HEAD
    + """
agg AS (SELECT p.cell AS key, """
    + MERGED
    + """ FROM src p GROUP BY p.cell),"""
    + _PRESENCE
    + CELL_ROWS
)

_PAIR_TEMPLATE: LiteralString = packed(
    _HEAD
    + """
"""
    + PAIR_AGG
    + """ AS (SELECT p.cell, """
    + MERGED
    + ","
    + merged("c_", hist=False)
    + """ FROM src p GROUP BY p.cell HAVING sum(p.n) > 0),"""
    + _PRESENCE
    + PAIR_ROWS
)


def _weekly(partials: sql.Composed) -> sql.Composable:
    """The same partials subquery over weekly_cell_windows (its columns are
    cell_windows')."""
    text = partials.as_string()
    return sql.SQL(text.replace('FROM "cell_windows"', 'FROM "weekly_cell_windows"'))


def _render(template: LiteralString, partials: sql.Composed, metric: Metric) -> bytes:
    return (
        sql.SQL(template)
        .format(daily=partials, weekly=_weekly(partials), weight=presence_weight(metric))
        .as_string()
        .encode()
    )


#: metric -> the query of its cells over a long range.
CELLS_QUERIES = {m: _render(_CELLS_TEMPLATE, metric_partials(m), m) for m in Metric}
#: (metric, covariate) -> the query of both (storage.cell_stats' pairs).
PAIR_QUERIES = {
    (m, o): _render(_PAIR_TEMPLATE, pair_partials(m, o), m)
    for m, o in (
        (Metric.PM1, Metric.HUMIDITY),
        (Metric.PM25, Metric.HUMIDITY),
        (Metric.PM10, Metric.HUMIDITY),
        (Metric.NO2, Metric.TEMPERATURE),
    )
}
