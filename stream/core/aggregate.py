"""Mergeable partial aggregates from enriched readings (docs/design.md decisions 1–4).

:func:`aggregate` turns any set of enriched readings into partials, one per
(metric, resolution, cell, window size, window start), plus presence rows, one
per (resolution, cell, window, ride). Storage calls it on exactly the rows that
were new in its transaction, so it must give the same totals however the
readings are split: ``merge_partials(aggregate(A) + aggregate(B))`` equals
``aggregate(A ∪ B)`` (histograms, counts, min and max exactly; sums to float
rounding), and presence rows likewise: ``merge_presence`` of the two equals those
of the union (metric bits, readings and noise energy per ride and cell-window).

Only readings the publication policy (:mod:`stream.core.policy`) allows count,
metric by metric, and a missing value (NaN) counts for nothing.

The readings are grouped once: one sort by the finest key (finest cell, smallest
window, ride), sums per group with ``np.add.reduceat``, every metric at once (a
row each of one 2-D array, a metric's uncounted readings adding 0 and taking no
extreme). Every other (resolution, window size) is rolled up from those groups,
which are ten to twenty times fewer than the readings: windows nest (every size
divides a day; sizes that do not divide each other roll up from windows of their
greatest common divisor) and a coarser cell is a bit operation on a finer one
(:func:`stream.core.binning.parent_cells`), so each coarser group is a merge of
finer ones. Counts, histograms, extremes and presence are then exactly those of
aggregating each key from the readings; sums differ by float rounding, as any
merge's do (tests/stream/test_aggregate.py checks both against a straightforward
aggregation). Aggregating each (resolution, window) from the readings, with a sort
per resolution, cost two and a half times as much CPU (bench/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bikesense import defaults
from stream.core.binning import cell_resolutions, check_resolutions, parent_cells
from stream.core.exceptions import InvalidBatchError
from stream.core.merge import group_starts, merge_partials
from stream.core.partials import (
    HIST_BINS,
    HIST_EDGES,
    METRIC_COLUMNS,
    PARTIAL_DTYPE,
    PRESENCE_DTYPE,
    Metric,
    metric_bit,
)
from stream.core.policy import DEFAULT_POLICY, PublicationPolicy
from stream.core.resolution import quantise
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
    "ts_ms",
    "cell",
    "ride_id",
    "qa_flags",
    "interval_ms",
    "noise_lamax_db",
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
    day_tz: str = defaults.DAY_TZ,
    policy: PublicationPolicy = DEFAULT_POLICY,
) -> tuple[np.ndarray, np.ndarray]:
    """Partials (``PARTIAL_DTYPE``, unique per key) and presence (``PRESENCE_DTYPE``, unique rows).

    ``enriched`` needs the fields of ``ENRICHED_DTYPE`` with qa flags, finest cell
    and ride id filled, in any order. ``day_tz`` decides the local day of a ride
    in the presence rows. Rows come in blocks of one (resolution, window size),
    resolutions and window sizes ascending; partials metric by metric in a block,
    then by (cell, window start); presence by (cell, window start, ride).
    """
    _check_enriched(enriched)
    res_list = check_resolutions(resolutions)
    win_list = check_window_sizes(window_sizes_s)
    masks = policy.publishable_masks(enriched)
    counted = np.zeros(len(enriched), dtype=bool)
    for mask in masks.values():
        counted |= mask
    if not counted.any():
        return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)
    finest = res_list[-1]
    coarsest_cell_res = int(cell_resolutions(enriched["cell"][counted]).min())
    if finest > coarsest_cell_res:
        msg = (
            f"cannot aggregate at H3 resolution {finest}: some readings are "
            f"binned only at resolution {coarsest_cell_res}"
        )
        raise InvalidBatchError(msg)

    # One sort of the readings, by the finest key: (finest cell, base window, ride).
    base_s = math.gcd(*win_list)
    index = np.flatnonzero(counted)
    cells = parent_cells(enriched["cell"][index], finest)
    starts = window_starts_ms(enriched["ts_ms"][index], base_s)
    rides = enriched["ride_id"][index]
    order = np.lexsort((rides, starts, cells))
    index, cells, starts, rides = index[order], cells[order], starts[order], rides[order]
    rows = enriched[index]
    masks = {m: mask[index] for m, mask in masks.items()}
    columns = _Columns.of(rows, masks)

    # Which metrics each reading counts for, as presence bits: a metric's k-anonymity
    # threshold counts the rides that measured it, not every ride through the cell.
    measured = np.zeros(len(rows), dtype=np.int16)
    for m, mask in masks.items():
        measured |= np.where(mask, np.int16(metric_bit(m)), np.int16(0))
    firsts = group_starts(cells, starts, rides)
    presence = np.zeros(len(firsts), dtype=PRESENCE_DTYPE)
    presence["resolution"] = finest
    presence["cell"] = cells[firsts]
    presence["window_s"] = base_s
    presence["window_start_ms"] = starts[firsts]
    presence["ride_id"] = rides[firsts]
    presence["day"] = local_days_and_hours(ride_starts_ms(presence["ride_id"]), day_tz)[0]
    presence["metrics"] = np.bitwise_or.reduceat(measured, firsts)
    # Every row here counts for at least one metric (only those were kept).
    presence["readings"] = np.diff(np.append(firsts, len(rows)))
    presence["noise_energy"] = np.add.reduceat(columns.energy, firsts)

    # Every coarser key is a merge of finer ones (windows nest, a cell's parent is its
    # index with bits cleared): the readings are summed once, at the finest
    # (resolution, window), and each other (resolution, window) from the sums of one
    # that nests in it, which are ten to twenty times fewer than the readings.
    groups = _Groups.of(columns, cells, starts)
    partials: dict[tuple[int, int], np.ndarray] = {}
    presences: dict[tuple[int, int], np.ndarray] = {}
    for res in reversed(res_list):
        if res != finest:
            parents = parent_cells(groups.cells, res)
            order = np.lexsort((groups.starts, parents))
            groups = groups.rolled_up(parents[order], groups.starts[order], order)
            presence = _rolled_presence(presence, res, base_s)
        by_size = {base_s: (groups, presence)}
        for window_s in win_list:
            # The largest window done that nests in this one (the base one always does).
            done = max(w for w in by_size if window_s % w == 0)
            finer, finer_presence = by_size[done]
            if window_s != done:
                # Sorted by (cell, start), the finer windows are sorted by the coarser
                # window holding them too.
                coarse = finer.rolled_up(finer.cells, window_starts_ms(finer.starts, window_s))
                by_size[window_s] = (coarse, _rolled_presence(finer_presence, res, window_s))
            level, level_presence = by_size[window_s]
            partials[res, window_s] = level.partials(res, window_s)
            presences[res, window_s] = level_presence
    keys = [(r, w) for r in res_list for w in win_list]
    return (
        np.concatenate([partials[k] for k in keys]),
        np.concatenate([presences[k] for k in keys]),
    )


@dataclass(frozen=True, slots=True)
class _Columns:
    """The counted rows' metric values, one row of a 2-D array per metric that has any
    (so that a reduction over readings runs along contiguous memory), with what their
    partials need precomputed."""

    metrics: np.ndarray  # int(Metric) of each row
    counted: np.ndarray  # (metrics, readings) bool: the reading counts for that metric
    values: np.ndarray  # (metrics, readings) float64, 0 where not counted
    low: np.ndarray  # values, +inf where not counted (for the minimum)
    high: np.ndarray  # values, -inf where not counted (for the maximum)
    bins: np.ndarray  # (metrics, readings) histogram bin, offset by the row: bin + 32·row
    noise: int | None  # the noise row, if any
    seconds: np.ndarray  # tᵢ, the interval each reading covers (0 where noise does not count)
    energy: np.ndarray  # tᵢ·10^(Lᵢ/10) (0 where noise does not count)
    lamax_db: np.ndarray  # NaN where noise does not count

    @classmethod
    def of(cls, rows: np.ndarray, masks: dict[Metric, np.ndarray]) -> _Columns:
        metrics = [m for m, mask in masks.items() if mask.any()]
        counted = np.stack([masks[m] for m in metrics])
        # At the decimal the kit sent, not the float32 it is stored in (stream.core.resolution).
        raw = np.stack([quantise(m, rows[METRIC_COLUMNS[m]]) for m in metrics])
        values = np.where(counted, raw, 0.0)
        # Bins of uncounted readings are never read (0 stands in for NaN, which would
        # land in the last bin).
        bins = np.stack([hist_bins(m, values[j]) for j, m in enumerate(metrics)])
        bins += (np.arange(len(metrics)) * HIST_BINS)[:, None]
        noise = metrics.index(Metric.NOISE) if Metric.NOISE in metrics else None
        zeros = np.zeros(len(rows))
        seconds, energy, lamax = zeros, zeros, np.full(len(rows), np.nan)
        if noise is not None:
            heard = counted[noise]
            seconds = np.where(heard, rows["interval_ms"].astype(np.float64) / 1000.0, 0.0)
            with np.errstate(over="ignore", invalid="ignore"):
                energy = np.where(heard, seconds * np.power(10.0, values[noise] / 10.0), 0.0)
            lamax = np.where(heard, quantise(Metric.NOISE, rows["noise_lamax_db"]), np.nan)
        return cls(
            np.array([int(m) for m in metrics]),
            counted,
            values,
            np.where(counted, raw, np.inf),
            np.where(counted, raw, -np.inf),
            bins,
            noise,
            seconds,
            energy,
            lamax,
        )


@dataclass(frozen=True, slots=True)
class _Groups:
    """What the partials of one (resolution, window size) are made of, per cell-window
    (a group) and metric, in arrays that merge along the group axis: the sums of a
    group of groups are those of its readings."""

    metrics: np.ndarray  # int(Metric) of each metric row
    noise: int | None  # the noise row, if any
    cells: np.ndarray  # (groups,) sorted by (cell, start)
    starts: np.ndarray  # (groups,)
    n: np.ndarray  # (metrics, groups) readings counted
    #: (2·metrics + 2, groups): Σx of each metric, Σx² of each, noise energy, duration.
    added: np.ndarray
    low: np.ndarray  # (metrics, groups) minimum, +inf without readings
    #: (metrics + 1, groups): maximum of each metric (-inf without readings), then LAmax
    #: (NaN without noise readings: taken with fmax, which skips NaN).
    high: np.ndarray
    hist: np.ndarray  # (groups, metrics · HIST_BINS) counts

    @classmethod
    def of(cls, columns: _Columns, cells: np.ndarray, starts: np.ndarray) -> _Groups:
        """The groups of readings sorted by (cell, start)."""
        firsts = group_starts(cells, starts)
        width, values = len(columns.metrics), columns.values
        added = np.concatenate(
            (values, values * values, columns.energy[None, :], columns.seconds[None, :])
        )
        high = np.concatenate((columns.high, columns.lamax_db[None, :]))
        sizes = np.diff(np.append(firsts, len(cells)))
        slot = columns.bins + np.repeat(np.arange(len(firsts)) * (width * HIST_BINS), sizes)
        hist = np.bincount(slot[columns.counted], minlength=len(firsts) * width * HIST_BINS)
        return cls(
            columns.metrics,
            columns.noise,
            cells[firsts],
            starts[firsts],
            np.add.reduceat(columns.counted, firsts, axis=1, dtype=np.int64),
            np.add.reduceat(added, firsts, axis=1),
            np.minimum.reduceat(columns.low, firsts, axis=1),
            np.fmax.reduceat(high, firsts, axis=1),
            hist.reshape(len(firsts), width * HIST_BINS),
        )

    def rolled_up(
        self, cells: np.ndarray, starts: np.ndarray, order: np.ndarray | None = None
    ) -> _Groups:
        """Groups of these groups: ``cells`` and ``starts`` are each group's coarser key,
        sorted, for the groups taken in ``order`` (as they are if None)."""
        n, added, low, high, hist = self.n, self.added, self.low, self.high, self.hist
        if order is not None:
            n, added, low, high = n[:, order], added[:, order], low[:, order], high[:, order]
            hist = hist[order]
        firsts = group_starts(cells, starts)
        return _Groups(
            self.metrics,
            self.noise,
            cells[firsts],
            starts[firsts],
            np.add.reduceat(n, firsts, axis=1),
            np.add.reduceat(added, firsts, axis=1),
            np.minimum.reduceat(low, firsts, axis=1),
            np.fmax.reduceat(high, firsts, axis=1),
            np.add.reduceat(hist, firsts, axis=0),
        )

    def partials(self, res: int, window_s: int) -> np.ndarray:
        """Partials of every metric, metric by metric, only the cell-windows where the
        metric counted at least one reading."""
        width = len(self.metrics)
        # Row-major order of the (metrics, groups) arrays: metric by metric.
        row, group = np.nonzero(self.n)
        out = np.zeros(len(row), dtype=PARTIAL_DTYPE)
        out["metric"] = self.metrics[row]
        out["resolution"] = res
        out["cell"] = self.cells[group]
        out["window_s"] = window_s
        out["window_start_ms"] = self.starts[group]
        out["n"] = self.n[row, group]
        out["sum"] = self.added[row, group]
        out["sumsq"] = self.added[width + row, group]
        out["min"] = self.low[row, group]
        out["max"] = self.high[row, group]
        out["hist"] = self.hist.reshape(len(self.cells), width, HIST_BINS)[group, row]
        out["lamax_db"] = np.nan
        if self.noise is not None:
            noisy = row == self.noise
            heard = group[noisy]
            out["energy"][noisy] = self.added[2 * width, heard]
            out["duration_s"][noisy] = self.added[2 * width + 1, heard]
            out["lamax_db"][noisy] = self.high[width, heard]
        return out


def _rolled_presence(presence: np.ndarray, res: int, window_s: int) -> np.ndarray:
    """Presence rows of a coarser key, from those of a finer one that nests in it: the
    rows of one (cell, window, ride) merged, metric bits ORed, readings and noise
    energy added; sorted by (cell, window start, ride)."""
    cells = parent_cells(presence["cell"], res)
    starts = window_starts_ms(presence["window_start_ms"], window_s)
    rides = presence["ride_id"]
    order = np.lexsort((rides, starts, cells))
    cells, starts, p = cells[order], starts[order], presence[order]
    firsts = group_starts(cells, starts, p["ride_id"])
    out = np.zeros(len(firsts), dtype=PRESENCE_DTYPE)
    out["resolution"] = res
    out["cell"] = cells[firsts]
    out["window_s"] = window_s
    out["window_start_ms"] = starts[firsts]
    # A ride has one day: the local day it started.
    for name in ("ride_id", "day"):
        out[name] = p[name][firsts]
    out["metrics"] = np.bitwise_or.reduceat(p["metrics"], firsts)
    out["readings"] = np.add.reduceat(p["readings"], firsts)
    out["noise_energy"] = np.add.reduceat(p["noise_energy"], firsts)
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
