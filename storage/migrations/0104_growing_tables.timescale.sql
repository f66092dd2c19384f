-- Every table that grows with time becomes a hypertable (docs/storage.md, "TimescaleDB":
-- what each keeps, for how long, and the measurement behind the chunk sizes).
--
-- cell_windows, window_rides and window_presence grow with every window the fleet
-- rides through; rejected_frames with every refused frame. readings has been one since
-- 0002. kits, h3_cells, api_keys and readings_held (at most two days of ride ends) do
-- not grow with time.
--
-- Chunks of one day, like readings'. Measured (docs/storage.md, "Chunk sizes"): an hour
-- of 50 kits riding apart, the default 4 resolutions x 4 window sizes, stored 290 bytes
-- per reading in readings, 215 in cell_windows, 17 in window_rides and 17 in
-- window_presence (with indexes). That fleet riding 6 hours a day (1.1 million readings)
-- fills at most about 310, 230, 18 and 18 MB a day: a day's chunks of all four fit
-- together in a quarter of a 4 GB machine's memory (TimescaleDB's rule for the chunks
-- being written), a week's (4 GB) would not. Refused frames too: dropped a day at a time at the raw readings' horizon.
SELECT create_hypertable('cell_windows', by_range('window_start', INTERVAL '1 day'),
                         migrate_data => true);
SELECT create_hypertable('window_rides', by_range('window_start', INTERVAL '1 day'),
                         migrate_data => true);
SELECT create_hypertable('window_presence', by_range('window_start', INTERVAL '1 day'),
                         migrate_data => true);

-- Refused frames: the key becomes (id, received_at), since a hypertable's unique key
-- must hold its time column; nothing refers to it, and id stays unique by itself.
ALTER TABLE rejected_frames
    DROP CONSTRAINT rejected_frames_pkey,
    ADD CONSTRAINT rejected_frames_pkey PRIMARY KEY (id, received_at);
SELECT create_hypertable('rejected_frames', by_range('received_at', INTERVAL '1 day'),
                         migrate_data => true);

-- Compression. Every reader of the aggregates names one resolution and one window size
-- (storage/merged_stats.py, storage/cell_means.py), then cells and a range of window starts:
-- segments by (resolution, window_s) hold thousands of rows each, and ordering by cell
-- then time keeps one cell's windows together with min/max metadata per batch of rows
-- that lets a tile or a cell's series skip the rest. Late data still lands: the writer's
-- upserts into a compressed chunk decompress the batch they touch.
ALTER TABLE cell_windows SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resolution, window_s',
    timescaledb.compress_orderby = 'cell, window_start'
);
ALTER TABLE window_rides SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resolution, window_s',
    timescaledb.compress_orderby = 'cell, window_start'
);
ALTER TABLE window_presence SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resolution, window_s',
    timescaledb.compress_orderby = 'cell, window_start, ride_id, day'
);
-- After a week, as readings: a kit's upload after days offline still lands in chunks
-- not yet compressed, and one later than that merges into the batch it touches.
-- Measured on the hour above: cell_windows 9.3 times smaller, window_rides 12.5,
-- window_presence 11.
SELECT add_compression_policy('cell_windows', INTERVAL '7 days');
SELECT add_compression_policy('window_rides', INTERVAL '7 days');
SELECT add_compression_policy('window_presence', INTERVAL '7 days');

-- Refused frames can carry positions: they follow the raw readings' horizon
-- (storage.retention.apply_retention sets both to BIKESENSE_RAW_RETENTION_DAYS).
SELECT add_retention_policy('rejected_frames', INTERVAL '90 days');
