-- Hourly values of official reference stations (Luchtmeetnet and the like), the ground
-- the kits are calibrated against (docs/reference-data.md). Small tables: a station has
-- 8,760 hours a year per metric, so one plain table serves both backends.
--
-- Written only by storage/reference.py (`bikesense reference import`): a file is imported
-- in one transaction, and importing an hour again replaces its value (networks revise
-- unvalidated values), so the key is (station, metric, hour).

CREATE TABLE reference_stations (
    -- The network's own id (Luchtmeetnet: "NL10404"): letters, digits and _ . : -
    station_id text PRIMARY KEY
        CHECK (station_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    lat_deg double precision NOT NULL CHECK (lat_deg BETWEEN -90 AND 90),
    lon_deg double precision NOT NULL CHECK (lon_deg BETWEEN -180 AND 180),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reference_values (
    station_id text NOT NULL REFERENCES reference_stations ON DELETE CASCADE,
    -- stream.core.partials.Metric.api_name of the concentrations a station can measure
    metric text NOT NULL CHECK (metric IN ('pm1', 'pm25', 'pm10', 'no2')),
    -- The start of the hour the value averages; a whole UTC hour.
    hour_start timestamptz NOT NULL CHECK (extract(epoch FROM hour_start) % 3600 = 0),
    -- NULL: the station published the hour without a value. Finite otherwise: in
    -- PostgreSQL NaN sorts above Infinity, so "< 'Infinity'" keeps NaN out too.
    value_ugm3 double precision
        CHECK (value_ugm3 > '-Infinity'::float8 AND value_ugm3 < 'Infinity'::float8),
    valid boolean NOT NULL,
    source text NOT NULL CHECK (source IN ('luchtmeetnet', 'csv')),
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, metric, hour_start),
    -- A valid hour has a value.
    CHECK (NOT valid OR value_ugm3 IS NOT NULL)
);
