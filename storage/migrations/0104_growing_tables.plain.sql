-- Nothing to change on plain PostgreSQL. The TimescaleDB variant makes the growing
-- tables hypertables; here the same promises are kept by `bikesense db drop-expired`
-- and the ingest process's hourly round (storage/retention.py, stream/maintenance.py):
-- raw readings dropped by daily partition, short-window presence and refused frames
-- deleted past the same horizon, aggregates kept.
SELECT 1;
