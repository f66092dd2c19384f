-- The k-anonymity threshold per metric (docs/privacy.md): a metric's value in a
-- cell-window is public only when at least k distinct rides measured that metric there.
-- Counting every ride through the cell let a ride without an NO2 cell make up the k of
-- another ride's NO2 value.
--
-- window_presence.metrics: the bit set of the metrics the ride measured in the
-- cell-window (bit int(Metric), stream.core.partials.metric_bit); the writer ORs it in
-- when the same ride brings another metric later. Rows stored before this migration
-- cannot tell which metrics their ride measured: they keep every bit (254), so the
-- data of before counts as it did (docs/privacy.md, "Limits").
ALTER TABLE window_presence ADD COLUMN metrics smallint NOT NULL DEFAULT 254;

-- window_rides.metric_rides[m]: the distinct rides that measured metric m (1..7) in
-- the cell-window, kept by the writer in the statement that stores the presence rows.
-- NULL on rows of before this migration: readers fall back to rides for those.
ALTER TABLE window_rides ADD COLUMN metric_rides integer[];
