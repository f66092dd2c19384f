-- Distinct rides (and their days) per cell-window, kept by the batch writer, so the
-- public k-anonymity check (docs/design.md decision 4) is a column check instead of a
-- count over window_presence: counting the presence rows of 30 days of a town's
-- cells per tile took 200 ms at p95 (bench/bench_tiles.py).
--
-- rides: distinct ride_id of the cell-window's presence rows. days: their distinct
-- days, sorted; a cell's distinct days over several windows is the union of these
-- (Selection.min_days), which counts cannot give. storage/writer.py updates both in
-- the transaction that inserts the presence rows, from exactly the rows that were new.
--
-- The key leads with the cell, not the time: a tile reads its own cells' windows,
-- not every cell of the town in the range (as 0101 did for window_presence).
CREATE TABLE window_rides (
    resolution   smallint NOT NULL,
    window_s     integer NOT NULL,
    cell         bigint NOT NULL,
    window_start timestamptz NOT NULL,
    rides        integer NOT NULL CHECK (rides >= 0),
    days         integer[] NOT NULL,
    PRIMARY KEY (resolution, window_s, cell, window_start)
);

-- The union of two sorted sets of days (merging on upsert); usually nothing new.
CREATE FUNCTION bikesense_days_union(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b <@ a THEN a
                ELSE ARRAY(SELECT DISTINCT d FROM unnest(a || b) AS d ORDER BY d) END
$$;

-- Backfill from what is stored. SHARE mode waits for running writers and keeps new
-- ones out until this commits, so no presence row is missed; stop writers running
-- older code before migrating (they would insert presence rows without counting them).
LOCK TABLE window_presence IN SHARE MODE;
INSERT INTO window_rides (resolution, window_s, cell, window_start, rides, days)
SELECT resolution, window_s, cell, window_start,
       count(DISTINCT ride_id), array_agg(DISTINCT day ORDER BY day)
FROM window_presence
GROUP BY resolution, window_s, cell, window_start;
ANALYZE window_rides;
