-- API read path (storage/cell_means.py, tiles): the public sees a cell-window only with
-- k distinct rides, counted from window_presence. Its primary key leads with
-- window_start, so counting the rides of one tile's cells scanned every cell of the
-- town in the range: 30 days of a town took seconds per tile (bench/bench_tiles.py).
-- Leading with the cell makes the scan proportional to the tile.
CREATE INDEX window_presence_cell_idx ON window_presence (resolution, window_s, cell, window_start);
