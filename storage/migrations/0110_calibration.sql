-- Calibration against reference stations, stored (docs/calibration.md, "Storage"):
-- the co-locations, the corrections fitted to them with their uncertainty, which
-- correction applies to which kit's readings when, and the corrected aggregates
-- beside the raw ones. Written by storage/calibration.py and
-- storage/corrected_windows.py (`bikesense calibration fit | apply`); the pure
-- pairing and fitting are stream/core/calibration*.py.

-- A station's EU kind (Commission Implementing Decision 2011/850/EU): pairing uses a
-- smaller radius at traffic and industrial stations (stream.core.calibration). ''
-- when not known, taken as background. Set by `bikesense reference kind`.
ALTER TABLE reference_stations
    ADD COLUMN kind text NOT NULL DEFAULT ''
        CHECK (kind IN ('traffic', 'industrial', 'background', ''));

-- One co-location (stream.core.calibration.PAIR_DTYPE): a kit's readings of one
-- metric within the pairing distance of one station in one UTC hour, and the
-- station's valid value of that hour. Kept after the raw readings expire, so a
-- correction can be re-estimated from them later; re-pairing an hour whose
-- readings are still stored replaces its pairs.
CREATE TABLE calibration_pairs (
    kit_id bigint NOT NULL,
    station_id text NOT NULL REFERENCES reference_stations ON DELETE CASCADE,
    -- stream.core.partials.Metric.api_name of a calibrated metric
    metric text NOT NULL CHECK (metric IN ('pm1', 'pm25', 'pm10', 'no2')),
    hour_start timestamptz NOT NULL CHECK (extract(epoch FROM hour_start) % 3600 = 0),
    kit_mean double precision NOT NULL,
    n integer NOT NULL CHECK (n > 0),
    humidity_mean_pct double precision,
    humid_term_mean double precision NOT NULL,
    temperature_mean_c double precision,
    distance_mean_m double precision NOT NULL CHECK (distance_mean_m >= 0),
    n_zero integer NOT NULL CHECK (n_zero BETWEEN 0 AND n),
    reference_ugm3 double precision NOT NULL,
    paired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (metric, hour_start, kit_id, station_id)
);

-- One estimate (stream.core.calibration_corrections.Correction), never changed once
-- written: the version is a hash of the model, the settings and the exact pairs, so
-- the same fit stores nothing new. kit_id NULL is the fleet's own correction; a kit
-- that fell back to it has a row of its own with source 'fleet', the fleet's
-- version, its own pair count in kit_pairs and the reason in note.
CREATE TABLE calibration_corrections (
    version text NOT NULL CHECK (version ~ '^[0-9a-z]+-[0-9a-f]{24}$'),
    metric text NOT NULL CHECK (metric IN ('pm1', 'pm25', 'pm10', 'no2')),
    kit_id bigint,
    source text NOT NULL CHECK (source IN ('kit', 'fleet')),
    -- θ (stream.core.calibration_corrections.PARAMS) and its 4 × 4 covariance, row-major
    offset_ugm3 double precision NOT NULL,
    gain double precision NOT NULL,
    humid_gain double precision NOT NULL,
    temp_coeff double precision NOT NULL,
    covariance double precision[] NOT NULL CHECK (cardinality(covariance) = 16),
    terms text[] NOT NULL,
    n_pairs integer NOT NULL CHECK (n_pairs >= 0),
    kit_pairs integer NOT NULL CHECK (kit_pairs >= 0),
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL CHECK (window_end > window_start),
    residual_sd double precision NOT NULL,
    humid_rh_pct double precision NOT NULL,
    temperature_ref_c double precision NOT NULL,
    note text NOT NULL DEFAULT '',
    fitted_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kit_id IS NULL) <= (source = 'fleet')),
    UNIQUE NULLS NOT DISTINCT (version, kit_id)
);

-- Which correction applies to a kit's readings of a metric in [valid_from, valid_to):
-- whole UTC days, so that every stored window (they divide a day) lies in one
-- period. Periods of a kit and metric never overlap: a new fit over a range
-- replaces what was there (storage.calibration.store_fit).
CREATE TABLE calibration_periods (
    metric text NOT NULL CHECK (metric IN ('pm1', 'pm25', 'pm10', 'no2')),
    kit_id bigint NOT NULL,
    valid_from timestamptz NOT NULL CHECK (extract(epoch FROM valid_from) % 86400 = 0),
    valid_to timestamptz NOT NULL
        CHECK (valid_to > valid_from AND extract(epoch FROM valid_to) % 86400 = 0),
    version text NOT NULL,
    PRIMARY KEY (metric, kit_id, valid_from),
    FOREIGN KEY (version, kit_id) REFERENCES calibration_corrections (version, kit_id)
);
CREATE INDEX calibration_periods_time_idx ON calibration_periods (valid_from, valid_to);

-- Corrected aggregates, beside cell_windows and in its shape (0007_cell_windows.sql),
-- for the calibrated metrics only: partials of the corrected values of the same
-- readings, merged over the same resolutions and windows, plus u_sum, the sum of
-- each reading's correction uncertainty (docs/calibration.md, "Intervals"). Computed
-- from the raw readings and the corrections by storage/corrected_windows.py, a UTC
-- day at a time, never merged by the stream: re-estimating a correction re-computes
-- the days it touches. A reading without a corrected value (no correction, or no
-- humidity where the correction needs it) counts for nothing here, so a row whose n
-- differs from cell_windows' is not shown (storage.corrected_windows).
CREATE TABLE cell_windows_corrected (
    resolution smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    window_s integer NOT NULL CHECK (window_s > 0),
    window_start timestamptz NOT NULL,
    cell bigint NOT NULL,
    pm1_n bigint NOT NULL DEFAULT 0 CHECK (pm1_n >= 0),
    pm1_sum double precision NOT NULL DEFAULT 0,
    pm1_sumsq double precision NOT NULL DEFAULT 0,
    pm1_min double precision,
    pm1_max double precision,
    pm1_hist integer[] CHECK ((pm1_n = 0) = (pm1_hist IS NULL) AND cardinality(pm1_hist) = 32),
    pm1_u_sum double precision NOT NULL DEFAULT 0,
    pm25_n bigint NOT NULL DEFAULT 0 CHECK (pm25_n >= 0),
    pm25_sum double precision NOT NULL DEFAULT 0,
    pm25_sumsq double precision NOT NULL DEFAULT 0,
    pm25_min double precision,
    pm25_max double precision,
    pm25_hist integer[] CHECK ((pm25_n = 0) = (pm25_hist IS NULL) AND cardinality(pm25_hist) = 32),
    pm25_u_sum double precision NOT NULL DEFAULT 0,
    pm10_n bigint NOT NULL DEFAULT 0 CHECK (pm10_n >= 0),
    pm10_sum double precision NOT NULL DEFAULT 0,
    pm10_sumsq double precision NOT NULL DEFAULT 0,
    pm10_min double precision,
    pm10_max double precision,
    pm10_hist integer[] CHECK ((pm10_n = 0) = (pm10_hist IS NULL) AND cardinality(pm10_hist) = 32),
    pm10_u_sum double precision NOT NULL DEFAULT 0,
    no2_n bigint NOT NULL DEFAULT 0 CHECK (no2_n >= 0),
    no2_sum double precision NOT NULL DEFAULT 0,
    no2_sumsq double precision NOT NULL DEFAULT 0,
    no2_min double precision,
    no2_max double precision,
    no2_hist integer[] CHECK ((no2_n = 0) = (no2_hist IS NULL) AND cardinality(no2_hist) = 32),
    no2_u_sum double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (resolution, window_s, window_start, cell)
);
CREATE INDEX cell_windows_corrected_cell_idx
    ON cell_windows_corrected (cell, window_s, window_start);

-- What the corrected aggregates of a UTC day were computed with: per metric, the
-- sorted versions of the corrections applied. `bikesense calibration apply`
-- re-computes a day whose periods now name other versions, and the API answers
-- with the versions behind what it shows.
CREATE TABLE calibration_days (
    day date NOT NULL,
    metric text NOT NULL CHECK (metric IN ('pm1', 'pm25', 'pm10', 'no2')),
    versions text[] NOT NULL,
    readings bigint NOT NULL CHECK (readings >= 0),  -- corrected readings of the day
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, metric)
);
