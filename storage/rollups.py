"""Weekly roll-ups of the daily windows, kept set-based by maintenance.

A long range read by a keyed role merges one row per cell and week instead of seven
daily ones (migrations/0116_weekly_rollups.sql, :mod:`storage.long_cells`). A week is
rolled up once it is over (:data:`GRACE`: a ride's day is local and rides may run past
midnight), and rolled up again when late data changes it. The writer marks the weeks it
touches (:func:`mark_weeks`, in the transaction that merges the aggregates), and a round
rolls up again, in one transaction that sees the tables as one snapshot, exactly the
marked weeks that are over: its cost follows what changed, not the history
(docs/storage.md, "Weekly roll-ups").

The presence of a week's days is found between the first and last daily window its
marks and its last roll-up name: a mark carries the windows of the rows it marks, and a
roll-up keeps the windows of the rows it rolled up (``rollup_weeks.presence_from/to``).
Weeks whose days have presence rows stored before migrations/0112_presence_shares.sql
(readings unknown) have only their partials rolled up; reads take their presence from
the daily windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import numpy as np
import psycopg

from storage.cellwindows import HIST_OFFSET, column
from stream.core.partials import HIST_BINS, Metric

DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: A week is rolled up this long after its last UTC day ends: rides whose local day is
#: in it may go on past its end (local midnight is up to 2 h after UTC's here; a ride
#: ends after a 20-minute pause, stream.core.rides.RideConfig).
GRACE = timedelta(hours=6)

#: One mark per (resolution, week) a batch's daily presence rows touch, with the first
#: and last of their windows and the first day they change (the least of their windows'
#: UTC days and their rides' days; migrations/0116_weekly_rollups.sql, rollup_marks,
#: and 0120_rollup_days.sql).
MARK_WEEKS: LiteralString = """
INSERT INTO rollup_marks (resolution, week, first_window, last_window, from_day)
SELECT r, w, timestamptz 'epoch' + f * interval '1 millisecond',
       timestamptz 'epoch' + l * interval '1 millisecond', d
FROM unnest(%s::smallint[], %s::integer[], %s::bigint[], %s::bigint[], %s::integer[])
     AS m (r, w, f, l, d)"""

WEEK_MS = WEEK_S * 1000


def week_marks(
    presence: np.ndarray,
) -> tuple[list[int], list[int], list[int], list[int], list[int]] | None:
    """The parameters of :data:`MARK_WEEKS` for presence rows (``PRESENCE_DTYPE``): per
    resolution and week that their daily rows touch, by the week their window starts in
    (the partials' week) and by the week of the ride's day (the presence's week), the
    first and last window start (ms) and the first day changed (the least of the rows'
    window days and ride days); None if they have no daily row."""
    daily = presence[presence["window_s"] == DAY_S]
    if not len(daily):
        return None
    starts_ms = daily["window_start_ms"].astype(np.int64)
    from_days = np.tile(np.minimum(starts_ms // (DAY_S * 1000), daily["day"].astype(np.int64)), 2)
    res = np.tile(daily["resolution"].astype(np.int64), 2)
    weeks = np.concatenate([daily["day"].astype(np.int64) // 7, starts_ms // WEEK_MS])
    starts_ms = np.tile(starts_ms, 2)
    key = res << 40 | (weeks + (1 << 39))  # weeks of +-2^39 days: far beyond any clock
    order = np.lexsort((starts_ms, key))
    key, starts_ms, from_days = key[order], starts_ms[order], from_days[order]
    firsts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lasts = np.r_[firsts[1:] - 1, len(key) - 1]
    return (
        (key[firsts] >> 40).tolist(),
        ((key[firsts] & ((1 << 40) - 1)) - (1 << 39)).tolist(),
        starts_ms[firsts].tolist(),
        starts_ms[lasts].tolist(),
        np.minimum.reduceat(from_days, firsts).tolist(),
    )


def mark_weeks(conn: psycopg.Connection[Any], presence: np.ndarray) -> None:
    """Mark the weeks ``presence``'s daily rows touch as changed, in the caller's
    transaction (the one that stores them)."""
    params = week_marks(presence)
    if params is not None:
        conn.execute(MARK_WEEKS, params)


def _week_partials() -> LiteralString:
    """The INSERT of the weeks in ``todo`` into weekly_cell_windows, merged from the
    daily cell-windows: sums add, extremes take the extreme, histograms add bin by bin
    and are stored cut to their counted bins as the writer stores them
    (migrations/0111_cell_windows_compact.sql)."""
    names: list[str] = []
    merged: list[str] = []
    cut: list[str] = []
    lateral: list[str] = []
    for m in Metric:
        fields = [("n", "sum"), ("sum", "sum"), ("sumsq", "sum"), ("min", "min"), ("max", "max")]
        if m is Metric.NOISE:
            fields += [("energy", "sum"), ("duration_s", "sum"), ("lamax_db", "max")]
        for field, how in fields:
            name = column(m, field)
            names.append(name)
            cast = "::bigint" if field == "n" else ""
            merged.append(f"{how}(c.{name}){cast} AS {name}")
            cut.append(f"g.{name}")
        hist, offset = column(m, "hist"), column(m, HIST_OFFSET)
        bins = ", ".join(
            f"coalesce(sum(c.{hist}[{i} - c.{offset}]), 0)" for i in range(1, HIST_BINS + 1)
        )
        merged.append(f"ARRAY[{bins}]::integer[] AS {hist}")
        lateral.append(
            f"CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e"
            f" FROM generate_subscripts(g.{hist}, 1) i WHERE g.{hist}[i] <> 0) {m.api_name}"
        )
    offsets = [column(m, HIST_OFFSET) for m in Metric]
    hists = [column(m, "hist") for m in Metric]
    cut += [f"{m.api_name}.o" for m in Metric]
    cut += [f"g.{column(m, 'hist')}[{m.api_name}.o + 1 : {m.api_name}.e]" for m in Metric]
    sql: LiteralString = (
        "INSERT INTO weekly_cell_windows (resolution, window_s, window_start, cell, "
        + ", ".join(names + offsets + hists)
        + ")\nSELECT g.resolution, 604800, g.week_start, g.cell, "
        + ", ".join(cut)
        + "\nFROM (SELECT c.resolution, t.week_start, c.cell, "
        + ", ".join(merged)
        + "\n    FROM todo t JOIN cell_windows c ON c.resolution = t.resolution"
        " AND c.window_s = 86400 AND c.window_start >= t.week_start"
        " AND c.window_start < t.week_start + make_interval(days => t.days)"
        "\n    GROUP BY c.resolution, t.week_start, c.cell) g\n" + "\n".join(lateral)
    )
    return sql


_WEEK_PARTIALS: LiteralString = _week_partials()

# The daily presence rows of the days of the weeks in ``todo`` (not unknown), found by
# the daily cell-windows (keyed by window start) between the windows the weeks' marks and
# last roll-ups name, and the presence rows of each (keyed by cell and window).
_WEEK_ROWS: LiteralString = """
CREATE TEMPORARY TABLE week_rows ON COMMIT DROP AS
SELECT t.resolution, t.week, pr.cell, pr.window_start, pr.ride_id, pr.day, pr.metrics,
       pr.readings, pr.noise_energy
FROM todo t
JOIN cell_windows c ON c.resolution = t.resolution AND c.window_s = 86400
     AND c.window_start >= t.search_from AND c.window_start <= t.search_to
JOIN window_presence pr ON pr.resolution = c.resolution AND pr.window_s = 86400
     AND pr.cell = c.cell AND pr.window_start = c.window_start
WHERE NOT t.unknown AND pr.day BETWEEN 7 * t.week AND 7 * t.week + t.days - 1"""

# Each week's state: its presence's first and last window, and whether it is unknown.
_WEEK_STATE: LiteralString = """
INSERT INTO rollup_weeks (resolution, week, days, presence_from, presence_to,
                          presence_unknown)
SELECT t.resolution, t.week, t.days, CASE WHEN NOT coalesce(r.unknown, false) THEN r.p_from END,
       CASE WHEN NOT coalesce(r.unknown, false) THEN r.p_to END,
       t.unknown OR coalesce(r.unknown, false)
FROM todo t
LEFT JOIN (SELECT resolution, week, min(window_start) AS p_from, max(window_start) AS p_to,
                  bool_or(readings IS NULL OR noise_energy IS NULL) AS unknown
           FROM week_rows GROUP BY resolution, week) r
     ON r.resolution = t.resolution AND r.week = t.week"""

# Per (cell, week, metric) as storage.merged_stats.presence_by counts a cell: a ride's
# weight in the cell (its readings; its noise energy for noise), its distinct rides and
# days, Σ wᵣ and Σ over (ride, day) of w·Wᵣ; for the weeks whose presence is known.
_WEEK_PRESENCE: LiteralString = """
INSERT INTO weekly_presence (resolution, week, cell, metric, rides, days, ride_w, ride_w_sq)
SELECT resolution, week, cell, metric, count(DISTINCT ride_id), count(DISTINCT day),
       sum(w), sum(w * ride_w)
FROM (
    SELECT resolution, week, cell, metric, ride_id, day, w,
           sum(w) OVER (PARTITION BY resolution, week, cell, metric, ride_id) AS ride_w
    FROM (
        SELECT pr.resolution, pr.week, pr.cell, m.metric, pr.ride_id, pr.day,
               CASE WHEN m.metric = 5 THEN sum(pr.noise_energy)::float8
                    ELSE sum(pr.readings)::float8 END AS w
        FROM week_rows pr
        JOIN rollup_weeks k ON k.resolution = pr.resolution AND k.week = pr.week
             AND NOT k.presence_unknown
        CROSS JOIN generate_series(1, 7) AS m (metric)
        WHERE (pr.metrics >> m.metric) & 1 = 1
        GROUP BY pr.resolution, pr.week, pr.cell, m.metric, pr.ride_id, pr.day) r) g
GROUP BY resolution, week, cell, metric"""


@dataclass(frozen=True, slots=True)
class RollupReport:
    rolled: int  # weeks (per resolution) rolled up whole, first time or again
    pending: int  # weeks (per resolution) marked but not over yet
    to_date: int = 0  # of those, weeks rolled up to date (their days that are over)


#: The lowest day a mark without ``from_day`` (from before 0120_rollup_days.sql) stands for.
_NO_DAY = -(2**31)


def refresh_rollups(conn: psycopg.Connection[Any], now: datetime | None = None) -> RollupReport:
    """Roll up again every marked week that is over (by :data:`GRACE`) and clear its
    marks; roll up to date every marked week not over whose marks change a day that is
    over (or a day that is over is not rolled up yet), and fold its marks into one (from
    the first day not rolled up, if rolled up now). One transaction at REPEATABLE READ:
    each roll-up is of one snapshot, and exactly the marks that snapshot sees are deleted
    or folded (a merge committed after it keeps its mark for the next round)."""
    now = now or datetime.now(UTC)
    over = int((now - GRACE).timestamp()) // DAY_S  # days before this one are over
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        marked = conn.execute(
            "SELECT resolution, week, min(first_window), max(last_window),"
            " min(coalesce(from_day, %s)) FROM rollup_marks"
            " GROUP BY resolution, week ORDER BY resolution, week",
            (_NO_DAY,),
        ).fetchall()
        if not marked:
            return RollupReport(rolled=0, pending=0)
        conn.execute("DELETE FROM rollup_marks")  # the marks this snapshot sees
        due: list[tuple[Any, ...]] = []
        pending: list[tuple[Any, ...]] = []
        for res, week, first, last, from_day in marked:
            days = min(7, over - 7 * week)  # the week's days that are over
            if days >= 7:
                due.append((res, week, first, last, 7))
            elif days >= 1 and from_day < 7 * week + days:
                due.append((res, week, first, last, days))  # to date
                pending.append((res, week, first, last, 7 * week + days))
            else:
                pending.append((res, week, first, last, from_day))
        if pending:
            with conn.cursor().copy(
                "COPY rollup_marks (resolution, week, first_window, last_window, from_day)"
                " FROM STDIN"
            ) as cp:
                for row in pending:
                    cp.write_row(row)
        if due:
            _roll_up(conn, due)
    whole = sum(1 for row in due if row[4] == 7)
    return RollupReport(rolled=whole, pending=len(pending), to_date=len(due) - whole)


def _roll_up(conn: psycopg.Connection[Any], due: list[tuple[Any, ...]]) -> None:
    """Roll up the weeks ``due`` (resolution, week, first and last marked window, days
    to roll up: 7, or those of a week not over that are over) again."""
    stored = {
        (int(r[0]), int(r[1])): r[2:]
        for r in conn.execute(
            "SELECT w.resolution, w.week, w.presence_from, w.presence_to, w.presence_unknown"
            " FROM rollup_weeks w JOIN unnest(%s::smallint[], %s::integer[]) AS d (r, k)"
            " ON w.resolution = d.r AND w.week = d.k",
            ([row[0] for row in due], [row[1] for row in due]),
        ).fetchall()
    }
    conn.execute(
        "CREATE TEMPORARY TABLE todo (resolution smallint, week integer, days smallint,"
        " week_start timestamptz, search_from timestamptz, search_to timestamptz,"
        " unknown boolean) ON COMMIT DROP"
    )
    with conn.cursor().copy(
        "COPY todo (resolution, week, days, week_start, search_from, search_to, unknown) FROM STDIN"
    ) as cp:
        for res, week, first, last, days in due:
            week_start = datetime.fromtimestamp(week * WEEK_S, UTC)
            # Every presence row of the week's days lies between the windows of its marks
            # and those of its last roll-up; its own days' windows are searched always.
            bounds = [first, last, week_start, week_start + timedelta(days=6)]
            p_from, p_to, unknown = stored.get((res, week), (None, None, False))
            bounds += [b for b in (p_from, p_to) if b is not None]
            cp.write_row((res, week, days, week_start, min(bounds), max(bounds), unknown))
    conn.execute("ANALYZE todo")
    conn.execute(
        "DELETE FROM weekly_cell_windows w USING todo t"
        " WHERE w.resolution = t.resolution AND w.window_start = t.week_start"
    )
    conn.execute(
        "DELETE FROM weekly_presence w USING todo t"
        " WHERE w.resolution = t.resolution AND w.week = t.week"
    )
    conn.execute(
        "DELETE FROM rollup_weeks w USING todo t"
        " WHERE w.resolution = t.resolution AND w.week = t.week"
    )
    conn.execute(_WEEK_PARTIALS)
    conn.execute(_WEEK_ROWS)
    conn.execute(_WEEK_STATE)
    conn.execute(_WEEK_PRESENCE)
