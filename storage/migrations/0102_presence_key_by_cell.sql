-- window_presence keyed by cell first, with one index instead of two. Numbered after
-- 0101, whose index it replaces: the primary key led with window_start, which no
-- reader uses; the API's presence reads and the writer's check for a ride stored with
-- another day (storage/writer.py) go by cell, through 0101's index. A key of the same
-- columns, cell first, serves both, and every new presence row updates one B-tree
-- instead of two. With partials one row per cell-window (0007), presence had become
-- the writer's most expensive statement (bench/RESULTS.md).
ALTER TABLE window_presence
    DROP CONSTRAINT window_presence_pkey,
    ADD CONSTRAINT window_presence_pkey
        PRIMARY KEY (resolution, window_s, cell, window_start, ride_id, day);
DROP INDEX window_presence_cell_idx;
