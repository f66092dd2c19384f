-- Raw readings on TimescaleDB: a hypertable with daily chunks, compressed after
-- a week and dropped by a retention policy; aggregates stay. The same columns
-- and key as 0002_readings.plain.sql (see there for why ts is in the key).
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE readings (
    kit_id         bigint NOT NULL,
    boot_id        bigint NOT NULL,
    seq            bigint NOT NULL,
    idx            integer NOT NULL,
    ts             timestamptz NOT NULL,
    lat_deg        double precision,
    lon_deg        double precision,
    gnss_fix       smallint NOT NULL,
    hdop           real,
    satellites     smallint,
    speed_mps      real,
    pm1_ugm3       real,
    pm25_ugm3      real,
    pm10_ugm3      real,
    no2_ugm3       real,
    noise_laeq_db  real,
    noise_lamax_db real,
    interval_ms    bigint NOT NULL,
    temperature_c  real,
    humidity_pct   real,
    status         integer NOT NULL,
    qa_flags       bigint NOT NULL,
    cell           bigint,
    ride_id        bigint NOT NULL,
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (kit_id, boot_id, seq, idx, ts)
);

SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'));

-- Compressed chunks still take late data: INSERT ... ON CONFLICT DO NOTHING
-- decompresses the segment it touches. Segment by kit so that one kit's late
-- upload touches one segment.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'kit_id',
    timescaledb.compress_orderby = 'ts, boot_id, seq, idx'
);
SELECT add_compression_policy('readings', INTERVAL '7 days');
-- Raw tracks are personal data (docs/design.md decision 4): keep 90 days by default;
-- storage.retention.set_raw_retention changes it.
SELECT add_retention_policy('readings', INTERVAL '90 days');

-- Chunks are created by TimescaleDB itself.
CREATE FUNCTION bikesense_ensure_readings_partitions(days integer[]) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;

CREATE FUNCTION bikesense_drop_expired_readings(older_than timestamptz) RETURNS SETOF text
LANGUAGE sql AS $$ SELECT drop_chunks('readings', older_than => older_than)::text $$;
