-- Week-to-date roll-ups (storage/rollups.py, docs/storage.md "Weekly roll-ups"): the days
-- of a week not over yet that are over are rolled up too, so a long range merges at most
-- the days not over beyond the roll-ups, not up to six days of daily rows per cell (55 %
-- of the rows of 400 days of an officer's cells at resolution 10 over
-- bench/bench_reads.py's backlog).
--
-- rollup_weeks.days: the week's days rolled up, 7w .. 7w + days - 1 (the UTC days of the
-- daily windows for the partials, the local days of the rides for the presence); 7 for a
-- week that is over.
ALTER TABLE rollup_weeks
    ADD COLUMN days smallint NOT NULL DEFAULT 7 CHECK (days BETWEEN 1 AND 7);

-- rollup_marks.from_day: the first day (days since 1970-01-01) the marked rows change,
-- the least of their windows' UTC days and their rides' local days: a week rolled up to
-- date is rolled up again only when a mark's changes reach a day it holds, or another
-- of its days is over. NULL (marks of writers before this migration): from the week's
-- first day.
ALTER TABLE rollup_marks ADD COLUMN from_day integer;
