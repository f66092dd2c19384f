-- cell_windows, smaller: each histogram keeps only its bins from the first counted one
-- to the last (stored as <metric>_hist_offset, the bins left out before it, and
-- <metric>_hist, the counts from there), the fixed-width columns come first and the
-- histograms last (no alignment padding between them), and pages are filled (fillfactor
-- 100, PostgreSQL's default, in place of 0007's 70).
--
-- Measured (bench/bench_storage.py: one riding day of 50 kits riding apart, 1,080,000
-- readings, 0.21 cell_windows rows per reading; bench/RESULTS.md, "Storage cost"): a row
-- held 1,416 bytes of data, 1,064 of them the seven histograms as integer[32] (a 24-byte
-- header and 32 counts each), and filled pages to 70 %; 2,227 bytes of heap a row,
-- 502-521 bytes per reading. A histogram of that data spans 1 to 18 bins on average
-- (temperature and humidity 1, PM10 18), so cut to its counted bins the seven take 458
-- bytes with their offsets, the row 810, and the table 232-260 bytes per reading. On
-- TimescaleDB compressed chunks change little (65 to 63 bytes per reading). Merging and
-- checking cut histograms costs the writer's PostgreSQL session about a tenth more CPU
-- per reading on that data (bench/RESULTS.md).
-- The fillfactor: 70 left room for the writer's merges to update a row on its own page
-- (92 % of them HOT against 62 % at 100), but the writer's PostgreSQL CPU per reading
-- was the same at 70, 85 and 100 within the noise of the shared machine, and the room
-- costs a quarter more space (296 bytes per reading at 70) and stays empty once a
-- window is no longer merged into, which is most of the table.
--
-- A histogram's full 32 bins (stream.core.partials.HIST_BINS) are
-- bikesense_hist_dense(offset, hist); window_partials, storage.cellwindows'
-- metric_partials and so every reader see them so. The writer merges histograms in
-- this form (storage/cellwindows.py). What is stored is carried over as it is: the
-- same rows, with every histogram cut to its counted bins.
LOCK TABLE cell_windows IN EXCLUSIVE MODE;
DROP VIEW window_partials;

-- A histogram's 32 bins from its stored form; NULL for a metric without readings.
-- Inlined by the planner (one SQL expression, not STRICT).
CREATE FUNCTION bikesense_hist_dense(hist_offset smallint, hist integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN hist IS NOT NULL THEN
        array_fill(0, ARRAY[hist_offset::integer]) || hist
        || array_fill(0, ARRAY[32 - hist_offset - cardinality(hist)])
    END
$$;

-- A metric has readings exactly when it has a histogram and an offset; the histogram is
-- one-dimensional, indexed from 1, starts and ends with a counted bin and stays within
-- the 32 bins.
CREATE TABLE cell_windows_compact (
    resolution smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    window_s integer NOT NULL CHECK (window_s > 0),
    window_start timestamptz NOT NULL,
    cell bigint NOT NULL,
    pm1_n bigint NOT NULL DEFAULT 0 CHECK (pm1_n >= 0),
    pm1_sum double precision NOT NULL DEFAULT 0,
    pm1_sumsq double precision NOT NULL DEFAULT 0,
    pm1_min double precision,
    pm1_max double precision,
    pm25_n bigint NOT NULL DEFAULT 0 CHECK (pm25_n >= 0),
    pm25_sum double precision NOT NULL DEFAULT 0,
    pm25_sumsq double precision NOT NULL DEFAULT 0,
    pm25_min double precision,
    pm25_max double precision,
    pm10_n bigint NOT NULL DEFAULT 0 CHECK (pm10_n >= 0),
    pm10_sum double precision NOT NULL DEFAULT 0,
    pm10_sumsq double precision NOT NULL DEFAULT 0,
    pm10_min double precision,
    pm10_max double precision,
    no2_n bigint NOT NULL DEFAULT 0 CHECK (no2_n >= 0),
    no2_sum double precision NOT NULL DEFAULT 0,
    no2_sumsq double precision NOT NULL DEFAULT 0,
    no2_min double precision,
    no2_max double precision,
    noise_n bigint NOT NULL DEFAULT 0 CHECK (noise_n >= 0),
    noise_sum double precision NOT NULL DEFAULT 0,
    noise_sumsq double precision NOT NULL DEFAULT 0,
    noise_min double precision,
    noise_max double precision,
    noise_energy double precision NOT NULL DEFAULT 0,
    noise_duration_s double precision NOT NULL DEFAULT 0,
    noise_lamax_db double precision,
    temperature_n bigint NOT NULL DEFAULT 0 CHECK (temperature_n >= 0),
    temperature_sum double precision NOT NULL DEFAULT 0,
    temperature_sumsq double precision NOT NULL DEFAULT 0,
    temperature_min double precision,
    temperature_max double precision,
    humidity_n bigint NOT NULL DEFAULT 0 CHECK (humidity_n >= 0),
    humidity_sum double precision NOT NULL DEFAULT 0,
    humidity_sumsq double precision NOT NULL DEFAULT 0,
    humidity_min double precision,
    humidity_max double precision,
    pm1_hist_offset smallint,
    pm25_hist_offset smallint,
    pm10_hist_offset smallint,
    no2_hist_offset smallint,
    noise_hist_offset smallint,
    temperature_hist_offset smallint,
    humidity_hist_offset smallint,
    pm1_hist integer[],
    pm25_hist integer[],
    pm10_hist integer[],
    no2_hist integer[],
    noise_hist integer[],
    temperature_hist integer[],
    humidity_hist integer[],
    CONSTRAINT cell_windows_pm1_hist CHECK (
        (pm1_n = 0) = (pm1_hist IS NULL) AND (pm1_hist IS NULL) = (pm1_hist_offset IS NULL)
        AND array_ndims(pm1_hist) = 1 AND array_lower(pm1_hist, 1) = 1
        AND pm1_hist_offset >= 0 AND cardinality(pm1_hist) BETWEEN 1 AND 32 - pm1_hist_offset
        AND pm1_hist[1] > 0 AND pm1_hist[cardinality(pm1_hist)] > 0),
    CONSTRAINT cell_windows_pm25_hist CHECK (
        (pm25_n = 0) = (pm25_hist IS NULL) AND (pm25_hist IS NULL) = (pm25_hist_offset IS NULL)
        AND array_ndims(pm25_hist) = 1 AND array_lower(pm25_hist, 1) = 1
        AND pm25_hist_offset >= 0 AND cardinality(pm25_hist) BETWEEN 1 AND 32 - pm25_hist_offset
        AND pm25_hist[1] > 0 AND pm25_hist[cardinality(pm25_hist)] > 0),
    CONSTRAINT cell_windows_pm10_hist CHECK (
        (pm10_n = 0) = (pm10_hist IS NULL) AND (pm10_hist IS NULL) = (pm10_hist_offset IS NULL)
        AND array_ndims(pm10_hist) = 1 AND array_lower(pm10_hist, 1) = 1
        AND pm10_hist_offset >= 0 AND cardinality(pm10_hist) BETWEEN 1 AND 32 - pm10_hist_offset
        AND pm10_hist[1] > 0 AND pm10_hist[cardinality(pm10_hist)] > 0),
    CONSTRAINT cell_windows_no2_hist CHECK (
        (no2_n = 0) = (no2_hist IS NULL) AND (no2_hist IS NULL) = (no2_hist_offset IS NULL)
        AND array_ndims(no2_hist) = 1 AND array_lower(no2_hist, 1) = 1
        AND no2_hist_offset >= 0 AND cardinality(no2_hist) BETWEEN 1 AND 32 - no2_hist_offset
        AND no2_hist[1] > 0 AND no2_hist[cardinality(no2_hist)] > 0),
    CONSTRAINT cell_windows_noise_hist CHECK (
        (noise_n = 0) = (noise_hist IS NULL) AND (noise_hist IS NULL) = (noise_hist_offset IS NULL)
        AND array_ndims(noise_hist) = 1 AND array_lower(noise_hist, 1) = 1
        AND noise_hist_offset >= 0 AND cardinality(noise_hist) BETWEEN 1 AND 32 - noise_hist_offset
        AND noise_hist[1] > 0 AND noise_hist[cardinality(noise_hist)] > 0),
    CONSTRAINT cell_windows_temperature_hist CHECK (
        (temperature_n = 0) = (temperature_hist IS NULL) AND (temperature_hist IS NULL) = (temperature_hist_offset IS NULL)
        AND array_ndims(temperature_hist) = 1 AND array_lower(temperature_hist, 1) = 1
        AND temperature_hist_offset >= 0 AND cardinality(temperature_hist) BETWEEN 1 AND 32 - temperature_hist_offset
        AND temperature_hist[1] > 0 AND temperature_hist[cardinality(temperature_hist)] > 0),
    CONSTRAINT cell_windows_humidity_hist CHECK (
        (humidity_n = 0) = (humidity_hist IS NULL) AND (humidity_hist IS NULL) = (humidity_hist_offset IS NULL)
        AND array_ndims(humidity_hist) = 1 AND array_lower(humidity_hist, 1) = 1
        AND humidity_hist_offset >= 0 AND cardinality(humidity_hist) BETWEEN 1 AND 32 - humidity_hist_offset
        AND humidity_hist[1] > 0 AND humidity_hist[cardinality(humidity_hist)] > 0)
) WITH (fillfactor = 100);
-- Daily chunks, as 0104 made cell_windows (see there for the measurement).
SELECT create_hypertable('cell_windows_compact', by_range('window_start', INTERVAL '1 day'));

INSERT INTO cell_windows_compact (
    resolution, window_s, window_start, cell, pm1_n, pm1_sum, pm1_sumsq, pm1_min, pm1_max,
    pm25_n, pm25_sum, pm25_sumsq, pm25_min, pm25_max, pm10_n, pm10_sum, pm10_sumsq,
    pm10_min, pm10_max, no2_n, no2_sum, no2_sumsq, no2_min, no2_max, noise_n, noise_sum,
    noise_sumsq, noise_min, noise_max, noise_energy, noise_duration_s, noise_lamax_db,
    temperature_n, temperature_sum, temperature_sumsq, temperature_min, temperature_max,
    humidity_n, humidity_sum, humidity_sumsq, humidity_min, humidity_max, pm1_hist_offset,
    pm25_hist_offset, pm10_hist_offset, no2_hist_offset, noise_hist_offset,
    temperature_hist_offset, humidity_hist_offset, pm1_hist, pm25_hist, pm10_hist,
    no2_hist, noise_hist, temperature_hist, humidity_hist)
SELECT c.resolution, c.window_s, c.window_start, c.cell, c.pm1_n, c.pm1_sum, c.pm1_sumsq,
       c.pm1_min, c.pm1_max, c.pm25_n, c.pm25_sum, c.pm25_sumsq, c.pm25_min, c.pm25_max,
       c.pm10_n, c.pm10_sum, c.pm10_sumsq, c.pm10_min, c.pm10_max, c.no2_n, c.no2_sum,
       c.no2_sumsq, c.no2_min, c.no2_max, c.noise_n, c.noise_sum, c.noise_sumsq,
       c.noise_min, c.noise_max, c.noise_energy, c.noise_duration_s, c.noise_lamax_db,
       c.temperature_n, c.temperature_sum, c.temperature_sumsq, c.temperature_min,
       c.temperature_max, c.humidity_n, c.humidity_sum, c.humidity_sumsq, c.humidity_min,
       c.humidity_max, pm1.o, pm25.o, pm10.o, no2.o, noise.o, temperature.o, humidity.o,
       c.pm1_hist[pm1.o + 1 : pm1.e], c.pm25_hist[pm25.o + 1 : pm25.e],
       c.pm10_hist[pm10.o + 1 : pm10.e], c.no2_hist[no2.o + 1 : no2.e],
       c.noise_hist[noise.o + 1 : noise.e],
       c.temperature_hist[temperature.o + 1 : temperature.e],
       c.humidity_hist[humidity.o + 1 : humidity.e]
FROM cell_windows c
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm1_hist, 1) i WHERE c.pm1_hist[i] <> 0) pm1
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm25_hist, 1) i WHERE c.pm25_hist[i] <> 0) pm25
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.pm10_hist, 1) i WHERE c.pm10_hist[i] <> 0) pm10
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.no2_hist, 1) i WHERE c.no2_hist[i] <> 0) no2
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.noise_hist, 1) i WHERE c.noise_hist[i] <> 0) noise
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.temperature_hist, 1) i WHERE c.temperature_hist[i] <> 0) temperature
CROSS JOIN LATERAL (SELECT (min(i) - 1)::smallint AS o, max(i) AS e
    FROM generate_subscripts(c.humidity_hist, 1) i WHERE c.humidity_hist[i] <> 0) humidity
ORDER BY c.resolution, c.window_s, c.window_start, c.cell;
DROP TABLE cell_windows;
ALTER TABLE cell_windows_compact RENAME TO cell_windows;
ALTER TABLE cell_windows
    ADD CONSTRAINT cell_windows_pkey PRIMARY KEY (resolution, window_s, window_start, cell);
CREATE INDEX cell_windows_cell_idx ON cell_windows (cell, window_s, window_start);
-- Compression as 0104 set it for the table this replaces, and the chunks it had
-- compressed (older than the policy's 7 days) compressed again now rather than at the
-- policy's next run: until then they would take their uncompressed size.
ALTER TABLE cell_windows SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resolution, window_s',
    timescaledb.compress_orderby = 'cell, window_start'
);
SELECT add_compression_policy('cell_windows', INTERVAL '7 days');
SELECT count(compress_chunk(c))
FROM show_chunks('cell_windows', older_than => INTERVAL '7 days') AS c;
ANALYZE cell_windows;

-- As 0007's: one row per metric with readings in a cell-window, histograms of 32 bins.
CREATE VIEW window_partials AS
SELECT p.metric, c.resolution, c.cell, c.window_s, c.window_start,
       p.n, p.sum, p.sumsq, p.min, p.max, p.energy, p.duration_s, p.lamax_db, p.hist
FROM cell_windows c CROSS JOIN LATERAL (VALUES
    (1::smallint, c.pm1_n, c.pm1_sum, c.pm1_sumsq, c.pm1_min, c.pm1_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.pm1_hist_offset, c.pm1_hist)),
    (2::smallint, c.pm25_n, c.pm25_sum, c.pm25_sumsq, c.pm25_min, c.pm25_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.pm25_hist_offset, c.pm25_hist)),
    (3::smallint, c.pm10_n, c.pm10_sum, c.pm10_sumsq, c.pm10_min, c.pm10_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.pm10_hist_offset, c.pm10_hist)),
    (4::smallint, c.no2_n, c.no2_sum, c.no2_sumsq, c.no2_min, c.no2_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.no2_hist_offset, c.no2_hist)),
    (5::smallint, c.noise_n, c.noise_sum, c.noise_sumsq, c.noise_min, c.noise_max,
     c.noise_energy, c.noise_duration_s, c.noise_lamax_db, bikesense_hist_dense(c.noise_hist_offset, c.noise_hist)),
    (6::smallint, c.temperature_n, c.temperature_sum, c.temperature_sumsq, c.temperature_min, c.temperature_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.temperature_hist_offset, c.temperature_hist)),
    (7::smallint, c.humidity_n, c.humidity_sum, c.humidity_sumsq, c.humidity_min, c.humidity_max,
     0::float8, 0::float8, NULL::float8, bikesense_hist_dense(c.humidity_hist_offset, c.humidity_hist))
) AS p (metric, n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist)
WHERE p.n > 0;
