-- Serialise partition creators with a lock on readings itself instead of an
-- advisory lock: taking a relation lock makes the backend read the catalog
-- changes other sessions committed meanwhile, so the re-check sees a partition
-- another writer just attached (with the advisory lock it could miss it and
-- fail with "relation already exists"). SHARE UPDATE EXCLUSIVE is what ATTACH
-- PARTITION takes anyway; it does not wait for inserts or reads.
CREATE OR REPLACE FUNCTION bikesense_ensure_readings_partitions(days integer[]) RETURNS integer
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
        LOCK TABLE readings IN SHARE UPDATE EXCLUSIVE MODE;
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
