"""Mergeable partial aggregates from enriched readings (DESIGN.md decisions 1–4).

:func:`aggregate` turns any set of enriched readings into partials, one per
(metric, resolution, cell, window size, window start), plus presence rows, one
per (resolution, cell, window, ride). Storage calls it on exactly the rows that
were new in its transaction, so it must give the same totals however the
readings are split: ``merge_partials(aggregate(A) + aggregate(B))`` equals
``aggregate(A ∪ B)`` (histograms, counts, min and max exactly; sums to float
rounding), and presence rows are a set union.

Only readings the publication policy (:mod:`stream.core.policy`) allows count,
metric by metric, and a missing value (NaN) counts for nothing. Group-by is one
sort per resolution: sorted by (cell, time), every window size's groups are
contiguous runs, summed with ``np.add.reduceat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.binning import NO_CELL, cell_resolutions, check_resolutions, parent_cells
from stream.core.exceptions import InvalidBatchError
from stream.core.merge import group_starts, merge_partials
from stream.core.partials import (
    HIST_BINS,
    HIST_EDGES,
    METRIC_COLUMNS,
    PARTIAL_DTYPE,
    PRESENCE_DTYPE,
    Metric,
)
from stream.core.policy import DEFAULT_POLICY, PublicationPolicy
from stream.core.rides import ride_starts_ms
from stream.core.summary import LDEN_DTYPE, SUMMARY_DTYPE, lden, summarise
from stream.core.windows import check_window_sizes, local_days_and_hours, window_starts_ms

__all__ = [
    "LDEN_DTYPE",
    "SUMMARY_DTYPE",
    "aggregate",
    "hist_bins",
    "lden",
    "merge_partials",
    "summarise",
]

_NEEDED_FIELDS = (
    "ts_ms", "cell", "ride_id", "qa_flags", "interval_ms", "noise_lamax_db",
    *METRIC_COLUMNS.values(),
)


def hist_bins(metric: Metric, values: np.ndarray) -> np.ndarray:
    """Histogram bin of each value; values beyond the edges go to the first / last bin."""
    edges = HIST_EDGES[metric]
    bins = np.searchsorted(edges, values, side="right") - 1
    return np.clip(bins, 0, HIST_BINS - 1)


def aggregate(
    enriched: np.ndarray,
    resolutions: Sequence[int],
    window_sizes_s: Sequence[int],
    day_tz: str = "Europe/Amsterdam",
    policy: PublicationPolicy = DEFAULT_POLICY,
) -> tuple[np.ndarray, np.ndarray]:
    """Partials (``PARTIAL_DTYPE``, unique per key) and presence (``PRESENCE_DTYPE``, unique rows).

    ``enriched`` needs the fields of ``ENRICHED_DTYPE`` with qa flags, finest cell
    and ride id filled, in any order. ``day_tz`` decides the local day of a ride
    in the presence rows.
    """
    _check_enriched(enriched)
    res_list = check_resolutions(resolutions)
    win_list = check_window_sizes(window_sizes_s)
    placed = enriched["cell"] != NO_CELL
    masks = {m: policy.publishable(enriched, m) & placed for m in METRIC_COLUMNS}
    counted = np.zeros(len(enriched), dtype=bool)
    for mask in masks.values():
        counted |= mask
    rows = enriched[counted]
    masks = {m: mask[counted] for m, mask in masks.items()}
    if len(rows) == 0:
        return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)
    coarsest_cell_res = int(cell_resolutions(rows["cell"]).min())
    if res_list[-1] > coarsest_cell_res:
        msg = (
            f"cannot aggregate at H3 resolution {res_list[-1]}: some readings are "
            f"binned only at resolution {coarsest_cell_res}"
        )
        raise InvalidBatchError(msg)

    columns = _metric_columns(rows, masks)
    ts = rows["ts_ms"]
    rides = rows["ride_id"]
    ride_days, _ = local_days_and_hours(ride_starts_ms(rides), day_tz)
    partials: list[np.ndarray] = []
    presence: list[np.ndarray] = []
    for res in res_list:
        cells = parent_cells(rows["cell"], res)
        order = np.lexsort((ts, cells))
        cells_o, ts_o = cells[order], ts[order]
        for window_s in win_list:
            starts_o = window_starts_ms(ts_o, window_s)
            presence.append(
                _presence(
                    res=res,
                    window_s=window_s,
                    cells=cells_o,
                    starts=starts_o,
                    rides=rides[order],
                    days=ride_days[order],
                )
            )
            for metric, col in columns.items():
                sel = col.mask[order]
                partials.append(
                    _partials(
                        metric,
                        res=res,
                        window_s=window_s,
                        cells=cells_o[sel],
                        starts=starts_o[sel],
                        col=col,
                        rows=order[sel],
                    )
                )
    return np.concatenate(partials), np.concatenate(presence)


@dataclass(frozen=True, slots=True)
class _Noise:
    seconds: np.ndarray  # tᵢ, the interval each reading covers
    energy: np.ndarray  # tᵢ·10^(Lᵢ/10)
    lamax_db: np.ndarray


@dataclass(frozen=True, slots=True)
class _Column:
    """One metric's values over the counted rows, with what its partials need precomputed."""

    mask: np.ndarray  # publishable for this metric
    values: np.ndarray
    bins: np.ndarray
    noise: _Noise | None


def _metric_columns(rows: np.ndarray, masks: dict[Metric, np.ndarray]) -> dict[Metric, _Column]:
    columns = {}
    for metric, mask in masks.items():
        if not mask.any():
            continue
        values = rows[METRIC_COLUMNS[metric]].astype(np.float64)
        # Bins of masked-out rows are never read; NaN would land in the last bin.
        bins = hist_bins(metric, np.where(mask, values, 0.0))
        noise = None
        if metric is Metric.NOISE:
            seconds = rows["interval_ms"].astype(np.float64) / 1000.0
            with np.errstate(over="ignore", invalid="ignore"):
                energy = seconds * np.power(10.0, values / 10.0)
            noise = _Noise(seconds, energy, rows["noise_lamax_db"].astype(np.float64))
        columns[metric] = _Column(mask, values, bins, noise)
    return columns


def _partials(
    metric: Metric,
    *,
    res: int,
    window_s: int,
    cells: np.ndarray,
    starts: np.ndarray,
    col: _Column,
    rows: np.ndarray,
) -> np.ndarray:
    """Partials of one metric at one resolution and window size; ``rows`` index into ``col``."""
    firsts = group_starts(cells, starts)
    out = np.zeros(len(firsts), dtype=PARTIAL_DTYPE)
    if len(firsts) == 0:
        return out
    values = col.values[rows]
    out["metric"] = int(metric)
    out["resolution"] = res
    out["cell"] = cells[firsts]
    out["window_s"] = window_s
    out["window_start_ms"] = starts[firsts]
    out["n"] = np.diff(np.append(firsts, len(rows)))
    out["sum"] = np.add.reduceat(values, firsts)
    out["sumsq"] = np.add.reduceat(values * values, firsts)
    out["min"] = np.minimum.reduceat(values, firsts)
    out["max"] = np.maximum.reduceat(values, firsts)
    if col.noise is not None:
        out["energy"] = np.add.reduceat(col.noise.energy[rows], firsts)
        out["duration_s"] = np.add.reduceat(col.noise.seconds[rows], firsts)
        out["lamax_db"] = np.fmax.reduceat(col.noise.lamax_db[rows], firsts)
    else:
        out["lamax_db"] = np.nan
    group = np.repeat(np.arange(len(firsts)), out["n"])
    flat = np.bincount(group * HIST_BINS + col.bins[rows], minlength=len(firsts) * HIST_BINS)
    out["hist"] = flat.reshape(len(firsts), HIST_BINS)
    return out


def _presence(
    *,
    res: int,
    window_s: int,
    cells: np.ndarray,
    starts: np.ndarray,
    rides: np.ndarray,
    days: np.ndarray,
) -> np.ndarray:
    """One row per distinct (cell, window, ride) among rows sorted by (cell, time)."""
    order = np.lexsort((rides, starts, cells))
    cells, starts, rides, days = cells[order], starts[order], rides[order], days[order]
    firsts = group_starts(cells, starts, rides)
    out = np.zeros(len(firsts), dtype=PRESENCE_DTYPE)
    out["resolution"] = res
    out["cell"] = cells[firsts]
    out["window_s"] = window_s
    out["window_start_ms"] = starts[firsts]
    out["ride_id"] = rides[firsts]
    out["day"] = days[firsts]
    return out


def _check_enriched(enriched: np.ndarray) -> None:
    names = enriched.dtype.names or ()
    missing = [f for f in _NEEDED_FIELDS if f not in names]
    if missing or enriched.ndim != 1:
        msg = (
            "aggregate needs a 1-D array of enriched readings (stream.core.batch."
            f"ENRICHED_DTYPE); missing fields: {', '.join(missing) or 'none'}, "
            f"shape {enriched.shape}"
        )
        raise InvalidBatchError(msg)

