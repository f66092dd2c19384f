-- Every partial's histogram has the same 32 bins (stream.core.partials.HIST_BINS).
-- The batch writer adds histograms element by element with an expression unrolled
-- over the bins (storage/writer.py), about three times cheaper per merged row than
-- bikesense_hist_add's plpgsql loop (bench/RESULTS.md); this constraint is what makes
-- that safe: a histogram of another length cannot get in to be added wrongly.
-- NOT VALID then VALIDATE: existing rows are checked without blocking writers.
ALTER TABLE window_partials
    ADD CONSTRAINT window_partials_hist_bins CHECK (cardinality(hist) = 32) NOT VALID;
ALTER TABLE window_partials VALIDATE CONSTRAINT window_partials_hist_bins;
