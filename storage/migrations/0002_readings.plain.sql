-- Raw readings on plain PostgreSQL: native range partitioning by event time,
-- one partition per UTC day, created on demand by the batch writer
-- (bikesense_ensure_readings_partitions) and dropped whole by retention
-- (bikesense_drop_expired_readings). docs/storage.md says why daily.
--
-- The columns must stay identical to 0002_readings.timescale.sql
-- (tests/storage/test_migrate.py compares them).
--
-- The identity of a reading is (kit_id, boot_id, seq, idx). A unique key on a
-- partitioned table must contain the partition column, so the key also holds
-- ts. That admits no duplicates: frames are MAC'd with the kit's secret, so a
-- given identity always comes with the same ts, and a redelivered frame hits
-- the same key.
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
) PARTITION BY RANGE (ts);
-- Exports stream in time order.
CREATE INDEX readings_ts_idx ON readings (ts);

-- Create the daily partitions (days since 1970-01-01, UTC) that do not exist yet.
-- A partition is created empty and then ATTACHed: ATTACH takes only a SHARE
-- UPDATE EXCLUSIVE lock on readings, which does not wait for running inserts or
-- exports (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE).
CREATE FUNCTION bikesense_ensure_readings_partitions(days integer[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       integer;
    name    text;
    lo      timestamptz;
    created integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    FOREACH d IN ARRAY days LOOP
        name := 'readings_d' || to_char(date '1970-01-01' + d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        -- Serialise creators: two writers meeting the same new day.
        PERFORM pg_advisory_xact_lock(7291436012);
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        lo := (date '1970-01-01' + d)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name);
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
                       name, name || '_range', lo, lo + interval '1 day');
        EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, lo + interval '1 day');
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions that end at or before older_than; aggregates stay.
CREATE FUNCTION bikesense_drop_expired_readings(older_than timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    FOR part IN
        SELECT c.relname::text AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_d[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        IF (to_date(substr(part.name, 11), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
                <= older_than THEN
            EXECUTE format('DROP TABLE %I', part.name);
            RETURN NEXT part.name;
        END IF;
    END LOOP;
END
$$;
