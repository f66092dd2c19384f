-- One row per cell-window holding every metric's partial, in place of window_partials'
-- one row per metric and cell-window (storage/cellwindows.py). A batch's readings carry
-- most of the seven metrics, so the writer's upsert probed the key and wrote a heap
-- tuple seven times per cell-window; now once. The per-reading cost of merging a
-- batch went down about 2.5 times (bench/RESULTS.md), the largest part of what the one
-- writing session spends.
--
-- Columns are <metric>_<field> for the metrics of stream.core.partials.Metric; a metric
-- without readings in the cell-window has n = 0, zero sums and a NULL min, max and
-- histogram. Every histogram has 32 bins (stream.core.partials.HIST_BINS): the writer
-- adds them element by element, unrolled (as 0006 made safe for window_partials).
CREATE TABLE cell_windows (
    resolution smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    window_s integer NOT NULL CHECK (window_s > 0),
    window_start timestamptz NOT NULL,
    cell bigint NOT NULL,
    pm1_n bigint NOT NULL DEFAULT 0 CHECK (pm1_n >= 0),
    pm1_sum double precision NOT NULL DEFAULT 0,
    pm1_sumsq double precision NOT NULL DEFAULT 0,
    pm1_min double precision,
    pm1_max double precision,
    pm1_hist integer[] CONSTRAINT cell_windows_pm1_hist
        CHECK ((pm1_n = 0) = (pm1_hist IS NULL) AND cardinality(pm1_hist) = 32),
    pm25_n bigint NOT NULL DEFAULT 0 CHECK (pm25_n >= 0),
    pm25_sum double precision NOT NULL DEFAULT 0,
    pm25_sumsq double precision NOT NULL DEFAULT 0,
    pm25_min double precision,
    pm25_max double precision,
    pm25_hist integer[] CONSTRAINT cell_windows_pm25_hist
        CHECK ((pm25_n = 0) = (pm25_hist IS NULL) AND cardinality(pm25_hist) = 32),
    pm10_n bigint NOT NULL DEFAULT 0 CHECK (pm10_n >= 0),
    pm10_sum double precision NOT NULL DEFAULT 0,
    pm10_sumsq double precision NOT NULL DEFAULT 0,
    pm10_min double precision,
    pm10_max double precision,
    pm10_hist integer[] CONSTRAINT cell_windows_pm10_hist
        CHECK ((pm10_n = 0) = (pm10_hist IS NULL) AND cardinality(pm10_hist) = 32),
    no2_n bigint NOT NULL DEFAULT 0 CHECK (no2_n >= 0),
    no2_sum double precision NOT NULL DEFAULT 0,
    no2_sumsq double precision NOT NULL DEFAULT 0,
    no2_min double precision,
    no2_max double precision,
    no2_hist integer[] CONSTRAINT cell_windows_no2_hist
        CHECK ((no2_n = 0) = (no2_hist IS NULL) AND cardinality(no2_hist) = 32),
    noise_n bigint NOT NULL DEFAULT 0 CHECK (noise_n >= 0),
    noise_sum double precision NOT NULL DEFAULT 0,
    noise_sumsq double precision NOT NULL DEFAULT 0,
    noise_min double precision,
    noise_max double precision,
    noise_hist integer[] CONSTRAINT cell_windows_noise_hist
        CHECK ((noise_n = 0) = (noise_hist IS NULL) AND cardinality(noise_hist) = 32),
    noise_energy double precision NOT NULL DEFAULT 0,
    noise_duration_s double precision NOT NULL DEFAULT 0,
    noise_lamax_db double precision,
    temperature_n bigint NOT NULL DEFAULT 0 CHECK (temperature_n >= 0),
    temperature_sum double precision NOT NULL DEFAULT 0,
    temperature_sumsq double precision NOT NULL DEFAULT 0,
    temperature_min double precision,
    temperature_max double precision,
    temperature_hist integer[] CONSTRAINT cell_windows_temperature_hist
        CHECK ((temperature_n = 0) = (temperature_hist IS NULL) AND cardinality(temperature_hist) = 32),
    humidity_n bigint NOT NULL DEFAULT 0 CHECK (humidity_n >= 0),
    humidity_sum double precision NOT NULL DEFAULT 0,
    humidity_sumsq double precision NOT NULL DEFAULT 0,
    humidity_min double precision,
    humidity_max double precision,
    humidity_hist integer[] CONSTRAINT cell_windows_humidity_hist
        CHECK ((humidity_n = 0) = (humidity_hist IS NULL) AND cardinality(humidity_hist) = 32),
    PRIMARY KEY (resolution, window_s, window_start, cell)
) WITH (fillfactor = 70);
-- Time series of one cell, and the public tiles' per-cell range scans. The resolution
-- is part of the H3 index, so the cell alone leads.
CREATE INDEX cell_windows_cell_idx ON cell_windows (cell, window_s, window_start);

-- Move what is stored. Stop writers running older code first: the lock waits for them
-- and keeps them out until this commits, after which their upsert into a view fails.
LOCK TABLE window_partials IN EXCLUSIVE MODE;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM window_partials WHERE metric NOT BETWEEN 1 AND 7) THEN
        RAISE EXCEPTION 'window_partials holds metrics other than 1..7; this migration knows '
            'only stream.core.partials.Metric and would lose them';
    END IF;
END
$$;
INSERT INTO cell_windows (
    resolution, window_s, window_start, cell,
    pm1_n, pm1_sum, pm1_sumsq, pm1_min, pm1_max, pm1_hist,
    pm25_n, pm25_sum, pm25_sumsq, pm25_min, pm25_max, pm25_hist,
    pm10_n, pm10_sum, pm10_sumsq, pm10_min, pm10_max, pm10_hist,
    no2_n, no2_sum, no2_sumsq, no2_min, no2_max, no2_hist,
    noise_n, noise_sum, noise_sumsq, noise_min, noise_max, noise_hist, noise_energy, noise_duration_s, noise_lamax_db,
    temperature_n, temperature_sum, temperature_sumsq, temperature_min, temperature_max, temperature_hist,
    humidity_n, humidity_sum, humidity_sumsq, humidity_min, humidity_max, humidity_hist)
SELECT resolution, window_s, window_start, cell,
       coalesce(max(n) FILTER (WHERE metric = 1), 0),
       coalesce(max(sum) FILTER (WHERE metric = 1), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 1), 0),
       min(min) FILTER (WHERE metric = 1),
       max(max) FILTER (WHERE metric = 1),
       min(hist) FILTER (WHERE metric = 1),
       coalesce(max(n) FILTER (WHERE metric = 2), 0),
       coalesce(max(sum) FILTER (WHERE metric = 2), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 2), 0),
       min(min) FILTER (WHERE metric = 2),
       max(max) FILTER (WHERE metric = 2),
       min(hist) FILTER (WHERE metric = 2),
       coalesce(max(n) FILTER (WHERE metric = 3), 0),
       coalesce(max(sum) FILTER (WHERE metric = 3), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 3), 0),
       min(min) FILTER (WHERE metric = 3),
       max(max) FILTER (WHERE metric = 3),
       min(hist) FILTER (WHERE metric = 3),
       coalesce(max(n) FILTER (WHERE metric = 4), 0),
       coalesce(max(sum) FILTER (WHERE metric = 4), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 4), 0),
       min(min) FILTER (WHERE metric = 4),
       max(max) FILTER (WHERE metric = 4),
       min(hist) FILTER (WHERE metric = 4),
       coalesce(max(n) FILTER (WHERE metric = 5), 0),
       coalesce(max(sum) FILTER (WHERE metric = 5), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 5), 0),
       min(min) FILTER (WHERE metric = 5),
       max(max) FILTER (WHERE metric = 5),
       min(hist) FILTER (WHERE metric = 5),
       coalesce(max(energy) FILTER (WHERE metric = 5), 0),
       coalesce(max(duration_s) FILTER (WHERE metric = 5), 0),
       max(lamax_db) FILTER (WHERE metric = 5),
       coalesce(max(n) FILTER (WHERE metric = 6), 0),
       coalesce(max(sum) FILTER (WHERE metric = 6), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 6), 0),
       min(min) FILTER (WHERE metric = 6),
       max(max) FILTER (WHERE metric = 6),
       min(hist) FILTER (WHERE metric = 6),
       coalesce(max(n) FILTER (WHERE metric = 7), 0),
       coalesce(max(sum) FILTER (WHERE metric = 7), 0),
       coalesce(max(sumsq) FILTER (WHERE metric = 7), 0),
       min(min) FILTER (WHERE metric = 7),
       max(max) FILTER (WHERE metric = 7),
       min(hist) FILTER (WHERE metric = 7)
FROM window_partials
GROUP BY resolution, window_s, window_start, cell;
DROP TABLE window_partials;
ANALYZE cell_windows;

-- The narrow shape, for ad-hoc SQL and whoever read window_partials: one row per metric
-- with readings in a cell-window, the columns of stream.core.partials.PARTIAL_DTYPE.
CREATE VIEW window_partials AS
SELECT p.metric, c.resolution, c.cell, c.window_s, c.window_start,
       p.n, p.sum, p.sumsq, p.min, p.max, p.energy, p.duration_s, p.lamax_db, p.hist
FROM cell_windows c CROSS JOIN LATERAL (VALUES
    (1::smallint, c.pm1_n, c.pm1_sum, c.pm1_sumsq, c.pm1_min, c.pm1_max,
     0::float8, 0::float8, NULL::float8, c.pm1_hist),
    (2::smallint, c.pm25_n, c.pm25_sum, c.pm25_sumsq, c.pm25_min, c.pm25_max,
     0::float8, 0::float8, NULL::float8, c.pm25_hist),
    (3::smallint, c.pm10_n, c.pm10_sum, c.pm10_sumsq, c.pm10_min, c.pm10_max,
     0::float8, 0::float8, NULL::float8, c.pm10_hist),
    (4::smallint, c.no2_n, c.no2_sum, c.no2_sumsq, c.no2_min, c.no2_max,
     0::float8, 0::float8, NULL::float8, c.no2_hist),
    (5::smallint, c.noise_n, c.noise_sum, c.noise_sumsq, c.noise_min, c.noise_max,
     c.noise_energy, c.noise_duration_s, c.noise_lamax_db, c.noise_hist),
    (6::smallint, c.temperature_n, c.temperature_sum, c.temperature_sumsq, c.temperature_min, c.temperature_max,
     0::float8, 0::float8, NULL::float8, c.temperature_hist),
    (7::smallint, c.humidity_n, c.humidity_sum, c.humidity_sumsq, c.humidity_min, c.humidity_max,
     0::float8, 0::float8, NULL::float8, c.humidity_hist)
) AS p (metric, n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist)
WHERE p.n > 0;
