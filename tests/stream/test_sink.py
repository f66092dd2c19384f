"""The embedded sink's live-update payload: what changed, computed from columns."""

from __future__ import annotations

import numpy as np

from storage.notify import notify_payload
from stream.core.binning import cells_at, parent_cells
from stream.core.partials import METRIC_COLUMNS
from stream.core.process import CoreConfig
from stream.core.windows import window_starts_ms
from stream.sink import _live_payload
from tests.stream.stream_factories import random_enriched


def _straightforward(enriched: np.ndarray, core: CoreConfig) -> str:
    placed = enriched[enriched["cell"] != 0]
    return notify_payload(
        metrics=[m.api_name for m, c in METRIC_COLUMNS.items() if np.isfinite(placed[c]).any()],
        resolutions=core.resolutions,
        windows={
            (size, int(start))
            for size in core.window_sizes_s
            for start in window_starts_ms(placed["ts_ms"], size).tolist()
        },
        cells=np.unique(parent_cells(placed["cell"], min(core.resolutions))).tolist(),
    )


def test_live_payload_names_the_windows_cells_and_metrics_of_placed_readings() -> None:
    core = CoreConfig()
    rows = random_enriched(11, 3000)
    rows["cell"] = cells_at(rows["lat_deg"], rows["lon_deg"], core.finest_resolution)
    rows["cell"][::7] = 0
    # A metric present only where there is no cell is not named.
    rows["no2_ugm3"] = np.nan
    rows["no2_ugm3"][::7] = 30.0
    payload = _live_payload(rows, core)
    assert payload == _straightforward(rows, core)
    assert '"no2"' not in payload
    empty = rows[:0]
    assert _live_payload(empty, core) == _straightforward(empty, core)
