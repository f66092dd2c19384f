-- cell_windows_corrected (0110) as cell_windows since 0111: each histogram stored from its
-- first counted bin to its last (<metric>_hist_offset, the bins left out before it, and
-- <metric>_hist, the counts from there), fixed-width columns first and histograms last,
-- pages filled (fillfactor 100: a day's rows are deleted and written again whole by
-- storage/corrected_apply.py, never updated in place). Rows are carried over as they
-- are, every histogram cut to its counted bins; bikesense_hist_dense(offset, hist)
-- (0111) gives the 32 bins back, and storage.corrected_windows reads them so.
--
-- Measured (bench/bench_corrected_storage.py: the calibration campaign of
-- tests/storage/test_calibration_simulated.py, the simulator's 14 days of 10 kits,
-- 246,946 readings, corrected with its own fit: 292,390 corrected rows, as many as
-- cell_windows): a stored histogram spans 3.3 to 3.6 bins on average, not 32; the table
-- took 966 bytes per reading with 0110's histograms of 32 bins and takes 574 cut (plain
-- PostgreSQL, with indexes), 981 and 548 on TimescaleDB before compression, 195 and 184
-- compressed.
--
-- Kept as cell_windows is, on both backends: indefinitely (docs/storage.md, "What is
-- kept"; docs/privacy.md): the rows are per cell and window, hold no one's positions,
-- and a day whose raw readings have expired cannot be corrected again.
LOCK TABLE cell_windows_corrected IN EXCLUSIVE MODE;

-- A metric has corrected readings exactly when it has a histogram and an offset; the
-- histogram is one-dimensional, indexed from 1, starts and ends with a counted bin and
-- stays within the 32 bins.
CREATE TABLE cell_windows_corrected_compact (
    resolution smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    window_s integer NOT NULL CHECK (window_s > 0),
    window_start timestamptz NOT NULL,
    cell bigint NOT NULL,
    pm1_n bigint NOT NULL DEFAULT 0 CHECK (pm1_n >= 0),
    pm1_sum double precision NOT NULL DEFAULT 0,
    pm1_sumsq double precision NOT NULL DEFAULT 0,
    pm1_min double precision,
    pm1_max double precision,
    pm1_u_sum double precision NOT NULL DEFAULT 0,
    pm25_n bigint NOT NULL DEFAULT 0 CHECK (pm25_n >= 0),
    pm25_sum double precision NOT NULL DEFAULT 0,
    pm25_sumsq double precision NOT NULL DEFAULT 0,
    pm25_min double precision,
    pm25_max double precision,
    pm25_u_sum double precision NOT NULL DEFAULT 0,
    pm10_n bigint NOT NULL DEFAULT 0 CHECK (pm10_n >= 0),
    pm10_sum double precision NOT NULL DEFAULT 0,
    pm10_sumsq double precision NOT NULL DEFAULT 0,
    pm10_min double precision,
    pm10_max double precision,
    pm10_u_sum double precision NOT NULL DEFAULT 0,
    no2_n bigint NOT NULL DEFAULT 0 CHECK (no2_n >= 0),
    no2_sum double precision NOT NULL DEFAULT 0,
    no2_sumsq double precision NOT NULL DEFAULT 0,
    no2_min double precision,
    no2_max double precision,
    no2_u_sum double precision NOT NULL DEFAULT 0,
    pm1_hist_offset smallint,
    pm25_hist_offset smallint,
    pm10_hist_offset smallint,
    no2_hist_offset smallint,
    pm1_hist integer[],
    pm25_hist integer[],
    pm10_hist integer[],
    no2_hist integer[],
    CONSTRAINT cell_windows_corrected_pm1_hist CHECK (
        (pm1_n = 0) = (pm1_hist IS NULL) AND (pm1_hist IS NULL) = (pm1_hist_offset IS NULL)
        AND array_ndims(pm1_hist) = 1 AND array_lower(pm1_hist, 1) = 1
        AND pm1_hist_offset >= 0 AND cardinality(pm1_hist) BETWEEN 1 AND 32 - pm1_hist_offset
        AND pm1_hist[1] > 0 AND pm1_hist[cardinality(pm1_hist)] > 0),
    CONSTRAINT cell_windows_corrected_pm25_hist CHECK (
        (pm25_n = 0) = (pm25_hist IS NULL) AND (pm25_hist IS NULL) = (pm25_hist_offset IS NULL)
        AND array_ndims(pm25_hist) = 1 AND array_lower(pm25_hist, 1) = 1
        AND pm25_hist_offset >= 0 AND cardinality(pm25_hist) BETWEEN 1 AND 32 - pm25_hist_offset
        AND pm25_hist[1] > 0 AND pm25_hist[cardinality(pm25_hist)] > 0),
    CONSTRAINT cell_windows_corrected_pm10_hist CHECK (
        (pm10_n = 0) = (pm10_hist IS NULL) AND (pm10_hist IS NULL) = (pm10_hist_offset IS NULL)
        AND array_ndims(pm10_hist) = 1 AND array_lower(pm10_hist, 1) = 1
        AND pm10_hist_offset >= 0 AND cardinality(pm10_hist) BETWEEN 1 AND 32 - pm10_hist_offset
        AND pm10_hist[1] > 0 AND pm10_hist[cardinality(pm10_hist)] > 0),
    CONSTRAINT cell_windows_corrected_no2_hist CHECK (
        (no2_n = 0) = (no2_hist IS NULL) AND (no2_hist IS NULL) = (no2_hist_offset IS NULL)
        AND array_ndims(no2_hist) = 1 AND array_lower(no2_hist, 1) = 1
        AND no2_hist_offset >= 0 AND cardinality(no2_hist) BETWEEN 1 AND 32 - no2_hist_offset
        AND no2_hist[1] > 0 AND no2_hist[cardinality(no2_hist)] > 0)
) WITH (fillfactor = 100);

-- Daily chunks, as cell_windows (0104): its rows are at most as many as cell_windows'
-- and smaller, and the API reads the two joined on the same key and ranges.
SELECT create_hypertable('cell_windows_corrected_compact',
                         by_range('window_start', INTERVAL '1 day'));

INSERT INTO cell_windows_corrected_compact (
    resolution, window_s, window_start, cell, pm1_n, pm1_sum, pm1_sumsq, pm1_min,
    pm1_max, pm1_u_sum, pm25_n, pm25_sum, pm25_sumsq, pm25_min, pm25_max, pm25_u_sum,
    pm10_n, pm10_sum, pm10_sumsq, pm10_min, pm10_max, pm10_u_sum, no2_n, no2_sum,
    no2_sumsq, no2_min, no2_max, no2_u_sum, pm1_hist_offset, pm25_hist_offset,
    pm10_hist_offset, no2_hist_offset, pm1_hist, pm25_hist, pm10_hist, no2_hist)
SELECT c.resolution, c.window_s, c.window_start, c.cell, c.pm1_n, c.pm1_sum, c.pm1_sumsq,
       c.pm1_min, c.pm1_max, c.pm1_u_sum, c.pm25_n, c.pm25_sum, c.pm25_sumsq,
       c.pm25_min, c.pm25_max, c.pm25_u_sum, c.pm10_n, c.pm10_sum, c.pm10_sumsq,
       c.pm10_min, c.pm10_max, c.pm10_u_sum, c.no2_n, c.no2_sum, c.no2_sumsq, c.no2_min,
       c.no2_max, c.no2_u_sum, pm1.o, pm25.o, pm10.o, no2.o, 
       c.pm1_hist[pm1.o + 1 : pm1.e], c.pm25_hist[pm25.o + 1 : pm25.e], c.pm10_hist[pm10.o + 1 : pm10.e],
       c.no2_hist[no2.o + 1 : no2.e]
FROM cell_windows_corrected c
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm1_hist, 1) i WHERE c.pm1_hist[i] <> 0) pm1
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm25_hist, 1) i WHERE c.pm25_hist[i] <> 0) pm25
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm10_hist, 1) i WHERE c.pm10_hist[i] <> 0) pm10
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.no2_hist, 1) i WHERE c.no2_hist[i] <> 0) no2
ORDER BY c.resolution, c.window_s, c.window_start, c.cell;
DROP TABLE cell_windows_corrected;
ALTER TABLE cell_windows_corrected_compact RENAME TO cell_windows_corrected;
ALTER TABLE cell_windows_corrected
    ADD CONSTRAINT cell_windows_corrected_pkey
        PRIMARY KEY (resolution, window_s, window_start, cell);
CREATE INDEX cell_windows_corrected_cell_idx
    ON cell_windows_corrected (cell, window_s, window_start);
-- Compression as cell_windows': every read of the corrected aggregates names one
-- resolution and one window size, then cells and a range of window starts, joined to
-- cell_windows on the same key (storage/corrected_windows.py), so the same segments and
-- order. After 7 days, as cell_windows: storage.corrected_apply re-computes a day from
-- its raw readings (kept 90 days by default), deleting and inserting the day's rows,
-- which decompresses what it touches in a compressed chunk. Chunks already older than 7
-- days are compressed now rather than at the policy's next run.
ALTER TABLE cell_windows_corrected SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resolution, window_s',
    timescaledb.compress_orderby = 'cell, window_start'
);
SELECT add_compression_policy('cell_windows_corrected', INTERVAL '7 days');
SELECT count(compress_chunk(c))
FROM show_chunks('cell_windows_corrected', older_than => INTERVAL '7 days') AS c;
ANALYZE cell_windows_corrected;
