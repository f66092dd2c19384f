"""Weekly roll-ups of the daily windows, kept set-based by maintenance.

A long range read by a keyed role merges one row per cell and week instead of seven
daily ones (migrations/0116_weekly_rollups.sql, :mod:`storage.long_cells`). A week is
rolled up once it is over (:data:`GRACE`: a ride's day is local and rides may run past
midnight), and rolled up again when late data changes it: every round compares each
week's fingerprint, the count of its daily presence rows and their readings, with the
one it was rolled up from, and rolls up again, in one transaction that sees the tables
as one snapshot, exactly the weeks that differ (docs/storage.md, "Weekly roll-ups").

Weeks whose presence holds rows stored before migrations/0112_presence_shares.sql
(readings unknown, so a change would not show in the fingerprint) are not rolled up;
reads take them from the daily windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg

from storage.cellwindows import HIST_OFFSET, column
from stream.core.partials import HIST_BINS, Metric

DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: A week is rolled up this long after its last UTC day ends: rides whose local day is
#: in it may go on past its end (local midnight is up to 2 h after UTC's here; a ride
#: ends after a 20-minute pause, stream.core.rides.RideConfig).
GRACE = timedelta(hours=6)

_EPOCH: LiteralString = "timestamptz '1970-01-01 00:00:00+00'"

# The fingerprint of every week with daily presence, per resolution: by the week the
# window starts in (the partials' week) and by the week of the rides' days (the
# presence's week), from one scan of the daily presence rows.
_FINGERPRINTS: LiteralString = (
    """
SELECT resolution, week, sum(c_rows)::bigint, sum(c_readings)::bigint, sum(p_rows)::bigint,
       sum(p_readings)::bigint, min(p_from), max(p_to), bool_or(unknown)
FROM (
    SELECT resolution,
           CASE WHEN grouping(ws_week) = 0 THEN ws_week ELSE day_week END AS week,
           CASE WHEN grouping(ws_week) = 0 THEN count(*) ELSE 0 END AS c_rows,
           CASE WHEN grouping(ws_week) = 0 THEN sum(readings) ELSE 0 END AS c_readings,
           CASE WHEN grouping(ws_week) = 1 THEN count(*) ELSE 0 END AS p_rows,
           CASE WHEN grouping(ws_week) = 1 THEN sum(readings) ELSE 0 END AS p_readings,
           CASE WHEN grouping(ws_week) = 1 THEN min(window_start) END AS p_from,
           CASE WHEN grouping(ws_week) = 1 THEN max(window_start) END AS p_to,
           bool_or(readings IS NULL OR noise_energy IS NULL) AS unknown
    FROM (SELECT resolution, window_start, readings, noise_energy,
                 floor(extract(epoch FROM window_start - """
    + _EPOCH
    + """) / 604800)::integer AS ws_week,
                 floor(day / 7.0)::integer AS day_week
          FROM window_presence WHERE window_s = 86400) d
    GROUP BY GROUPING SETS ((resolution, ws_week), (resolution, day_week))) g
GROUP BY resolution, week"""
)

_STORED: LiteralString = """
SELECT resolution, week, cells_rows, cells_readings, presence_rows, presence_readings,
       presence_from, presence_to
FROM rollup_weeks"""


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
        " AND c.window_start < t.week_start + interval '7 days'"
        "\n    GROUP BY c.resolution, t.week_start, c.cell) g\n" + "\n".join(lateral)
    )
    return sql


_WEEK_PARTIALS: LiteralString = _week_partials()

# Per (cell, week, metric) as storage.merged_stats.presence_by counts a cell: a ride's
# weight in the cell (its readings; its noise energy for noise), its distinct rides and
# days, Σ wᵣ and Σ over (ride, day) of w·Wᵣ.
_WEEK_PRESENCE: LiteralString = """
INSERT INTO weekly_presence (resolution, week, cell, metric, rides, days, ride_w, ride_w_sq)
SELECT resolution, week, cell, metric, count(DISTINCT ride_id), count(DISTINCT day),
       sum(w), sum(w * ride_w)
FROM (
    SELECT resolution, week, cell, metric, ride_id, day, w,
           sum(w) OVER (PARTITION BY resolution, week, cell, metric, ride_id) AS ride_w
    FROM (
        SELECT pr.resolution, t.week, pr.cell, m.metric, pr.ride_id, pr.day,
               CASE WHEN m.metric = 5 THEN sum(pr.noise_energy)::float8
                    ELSE sum(pr.readings)::float8 END AS w
        FROM todo t
        JOIN window_presence pr ON pr.resolution = t.resolution AND pr.window_s = 86400
             AND pr.day BETWEEN 7 * t.week AND 7 * t.week + 6
        CROSS JOIN generate_series(1, 7) AS m (metric)
        WHERE (pr.metrics >> m.metric) & 1 = 1
        GROUP BY pr.resolution, t.week, pr.cell, m.metric, pr.ride_id, pr.day) r) g
GROUP BY resolution, week, cell, metric"""


@dataclass(frozen=True, slots=True)
class RollupReport:
    rolled: int  # weeks (per resolution) rolled up, first time or again
    dropped: int  # weeks whose daily windows are gone


def refresh_rollups(conn: psycopg.Connection[Any], now: datetime | None = None) -> RollupReport:
    """Roll up every week that is over (by :data:`GRACE`) and not rolled up from what the
    daily windows hold now; drop the roll-ups of weeks no longer there. One transaction
    at REPEATABLE READ, so each week's roll-up and its fingerprint are of one snapshot."""
    now = now or datetime.now(UTC)
    last_week = int((now - GRACE).timestamp()) // WEEK_S - 1  # the last week that is over
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        current = {(int(r[0]), int(r[1])): r for r in conn.execute(_FINGERPRINTS).fetchall()}
        stored = {(int(r[0]), int(r[1])): r for r in conn.execute(_STORED).fetchall()}
        todo = [
            key
            for key, row in current.items()
            if key[1] <= last_week
            and not row[8]
            and (key not in stored or tuple(stored[key][2:]) != tuple(row[2:8]))
        ]
        gone = [key for key in stored if key not in current or current[key][8]]
        redo = todo + gone
        if redo:
            conn.execute(
                "CREATE TEMPORARY TABLE todo (resolution smallint, week integer,"
                " week_start timestamptz) ON COMMIT DROP"
            )
            with conn.cursor().copy("COPY todo (resolution, week, week_start) FROM STDIN") as cp:
                for res, week in redo:
                    cp.write_row((res, week, datetime.fromtimestamp(week * WEEK_S, UTC)))
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
            if gone:
                conn.execute(
                    "DELETE FROM todo WHERE (resolution, week) IN"
                    " (SELECT * FROM unnest(%s::smallint[], %s::integer[]))",
                    ([k[0] for k in gone], [k[1] for k in gone]),
                )
            if todo:
                conn.execute(_WEEK_PARTIALS)
                conn.execute(_WEEK_PRESENCE)
                with conn.cursor().copy(
                    "COPY rollup_weeks (resolution, week, cells_rows, cells_readings,"
                    " presence_rows, presence_readings, presence_from, presence_to)"
                    " FROM STDIN"
                ) as cp:
                    for key in todo:
                        cp.write_row(current[key][:8])
    return RollupReport(rolled=len(todo), dropped=len(gone))
