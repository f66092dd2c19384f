-- Weekly roll-ups of the daily windows, for long ranges read by keyed roles
-- (storage/rollups.py, docs/storage.md "Weekly roll-ups"). 400 days of an officer's
-- cells at resolution 10 merged 67,679 daily cell-windows and grouped 245,226 presence
-- rows per request over bench/bench_reads.py's backlog, 820 ms of PostgreSQL CPU
-- (bench/RESULTS.md); a week rolled up is one row per cell for the partials and one per
-- (cell, metric) for the rides, days and ride shares.
--
-- A week is 7 days counted from 1970-01-01 (a Thursday): week w holds the UTC days
-- 7w .. 7w + 6, the days a daily window starts on, and the local days 7w .. 7w + 6 a
-- ride's day is (window_presence.day). The partials of a week are those of the daily
-- cell-windows starting in it; its presence is that of the rides whose day is in it.
-- A ride has one day (the local day it started, stream/core/aggregate.py), so every
-- ride is in one week, and distinct rides and days over several weeks add up exactly.
--
-- Plain tables on both backends: a roll-up is a seventh of the daily rows and is
-- rewritten a week at a time, which is not what hypertable chunks are for.

-- The merged partials of a week's daily cell-windows: cell_windows' columns, with
-- window_s 604800 and window_start the week's first instant (UTC).
CREATE TABLE weekly_cell_windows (LIKE cell_windows INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE weekly_cell_windows
    ADD CONSTRAINT weekly_cell_windows_pkey PRIMARY KEY (resolution, window_start, cell),
    ADD CONSTRAINT weekly_cell_windows_week CHECK (window_s = 604800);

-- Per (cell, week of the rides' days, metric): the distinct rides and days that measured
-- the metric in the cell's daily windows, and Σ wᵣ and Σ wᵣ² of the rides' weights
-- (storage.cellwindows.presence_weight; storage.merged_stats.presence_by).
CREATE TABLE weekly_presence (
    resolution smallint NOT NULL,
    week integer NOT NULL,
    cell bigint NOT NULL,
    metric smallint NOT NULL CHECK (metric BETWEEN 1 AND 7),
    rides integer NOT NULL CHECK (rides > 0),
    days integer NOT NULL CHECK (days > 0),
    ride_w double precision NOT NULL,
    ride_w_sq double precision NOT NULL,
    PRIMARY KEY (resolution, week, metric, cell)
);

-- The weeks rolled up, per resolution, with the first and last daily window holding
-- presence of the week's days (a ride's windows may start in the next week; NULL: no
-- presence of its days, or presence_unknown): a read uses the week's presence only if
-- its range holds both. presence_unknown: the week's days have presence rows stored
-- before migrations/0112_presence_shares.sql (readings unknown, and they stay unknown
-- when rows are added to them), so its presence is never rolled up, only its partials.
CREATE TABLE rollup_weeks (
    resolution smallint NOT NULL,
    week integer NOT NULL,
    presence_from timestamptz,
    presence_to timestamptz,
    presence_unknown boolean NOT NULL DEFAULT false,
    rolled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resolution, week)
);

-- The weeks that changed since they were last rolled up, appended by the writer in the
-- transaction that merges the aggregates (storage.aggregate_rows.store, one row per
-- resolution and week its daily presence rows touch, by the week of the window and by
-- the week of the ride's day) with the first and last daily window of those rows: so a
-- refresh reads what changed, not the whole history, and finds every presence row of a
-- week's days between the windows its marks and its last roll-up name. No key, so a
-- mark never waits for nor conflicts with another: a refresh, at REPEATABLE READ,
-- deletes exactly the marks its snapshot sees, and a merge committed after that
-- snapshot keeps its mark for the next round (storage/rollups.py).
CREATE TABLE rollup_marks (
    resolution smallint NOT NULL,
    week integer NOT NULL,
    first_window timestamptz NOT NULL,
    last_window timestamptz NOT NULL
);

-- Every week the daily presence holds so far, to be rolled up by the first refresh.
INSERT INTO rollup_marks (resolution, week, first_window, last_window)
SELECT resolution, week, min(window_start), max(window_start)
FROM (SELECT resolution, window_start, w.week
      FROM window_presence
      CROSS JOIN LATERAL (VALUES (floor(day / 7.0)::integer),
          (floor(extract(epoch FROM window_start) / 604800)::integer)) AS w (week)
      WHERE window_s = 86400) d
GROUP BY resolution, week;
