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

-- The weeks rolled up, per resolution, with what they were rolled up from: the count of
-- daily presence rows and their readings by the week their window starts in (cells_*)
-- and by the week of their day (presence_*), the fingerprint a refresh compares to find
-- weeks that late data changed (every reading that counts for a metric adds to the
-- readings of a presence row of its daily cell-window, in the transaction that merges
-- its partials); and the first and last daily window holding presence of the week's
-- days (a ride's windows may start in the next week): a read uses the week's presence
-- only if its range holds both.
CREATE TABLE rollup_weeks (
    resolution smallint NOT NULL,
    week integer NOT NULL,
    cells_rows bigint NOT NULL,
    cells_readings bigint NOT NULL,
    presence_rows bigint NOT NULL,
    presence_readings bigint NOT NULL,
    presence_from timestamptz,
    presence_to timestamptz,
    rolled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resolution, week)
);
