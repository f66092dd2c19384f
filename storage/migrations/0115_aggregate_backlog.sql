-- Readings whose aggregates were deferred past the transaction that stored them
-- (storage/backlog.py, docs/storage.md "Aggregates merged over several batches").
--
-- The embedded runtime merges the aggregates of several batches in memory before
-- it upserts them once: fewer, fuller partial rows per reading. A batch whose
-- aggregates wait stores its readings and, in the same transaction, one row here
-- naming exactly the readings that were new in it (their keys, as the writer's
-- numpy array: kit_id, boot_id, seq as uint32, idx as uint16, ts_ms as int64,
-- little-endian, packed). The transaction that later upserts those aggregates
-- deletes the row; a row found after a crash is aggregated from the stored
-- readings and deleted in one transaction. So every new reading's aggregates are
-- merged exactly once (docs/design.md decision 2).
--
-- The keys are numpy bytes, neither compressed nor read but on recovery:
-- STORAGE EXTERNAL keeps PostgreSQL from compressing them on every write.
CREATE TABLE aggregate_backlog (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stored_at timestamptz NOT NULL DEFAULT now(),
    readings integer NOT NULL CHECK (readings > 0),
    keys bytea NOT NULL,
    CHECK (octet_length(keys) = readings * 22)
);
ALTER TABLE aggregate_backlog ALTER COLUMN keys SET STORAGE EXTERNAL;
