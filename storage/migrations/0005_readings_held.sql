-- End-of-ride trimming (docs/design.md decision 4, stream.core.privacy.ride_end_fates):
-- a reading is known not to be among the last minutes of its ride only once the
-- same ride has gone on for those minutes. Until then it waits here, written in
-- the same transaction as the batch that brought it, so that its frame can be
-- acknowledged without losing it (docs/design.md decision 2). It leaves in a later
-- batch's transaction: into `readings` (and the aggregates) once the ride goes on,
-- or deleted once the kit has started a newer ride. Nothing reads this table
-- but the runtime (storage/held.py): held readings are in no aggregate, export or
-- API answer. Rows of kits that never send again are deleted by the maintenance
-- job after the ride memory (two days by default).
--
-- Same columns and types as the writer's binary COPY of a reading
-- (storage.readings.READING_COLUMNS without its row number), with absent values
-- kept as the stream marks them (NaN, -1 satellites, cell 0) rather than NULL, so
-- rows go in and come back with one fixed-width binary COPY each way.
CREATE TABLE readings_held (
    kit_id         bigint NOT NULL,
    boot_id        bigint NOT NULL,
    seq            bigint NOT NULL,
    idx            integer NOT NULL,
    ts             timestamptz NOT NULL,
    lat_deg        double precision NOT NULL,
    lon_deg        double precision NOT NULL,
    gnss_fix       smallint NOT NULL,
    hdop           real NOT NULL,
    satellites     smallint NOT NULL,
    speed_mps      real NOT NULL,
    pm1_ugm3       real NOT NULL,
    pm25_ugm3      real NOT NULL,
    pm10_ugm3      real NOT NULL,
    no2_ugm3       real NOT NULL,
    noise_laeq_db  real NOT NULL,
    noise_lamax_db real NOT NULL,
    interval_ms    bigint NOT NULL,
    temperature_c  real NOT NULL,
    humidity_pct   real NOT NULL,
    status         integer NOT NULL,
    qa_flags       bigint NOT NULL,
    cell           bigint NOT NULL,
    ride_id        bigint NOT NULL,
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (kit_id, boot_id, seq, idx)
);
-- The maintenance job's expiry scan.
CREATE INDEX readings_held_received_idx ON readings_held (received_at);
