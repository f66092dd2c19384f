-- Nothing to change on TimescaleDB: chunks are created by TimescaleDB itself
-- (the plain variant of this version fixes partition creation under concurrency).
SELECT 1;
