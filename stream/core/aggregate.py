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
metric by metric, and a missing value (NaN) counts for nothing. Group-by is one
sort per resolution: sorted by (cell, time), every window size's groups are
contiguous runs, summed with ``np.add.reduceat``, every metric at once (a
column each of one 2-D array, a metric's uncounted rows adding 0 and taking no
extreme): a call per (resolution, window size) rather than per metric too, for
a batch's few thousand readings the numpy calls' own cost is most of the work.
"""

from __future__ import annotations

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
    in the presence rows.
    """
    _check_enriched(enriched)
    res_list = check_resolutions(resolutions)
    win_list = check_window_sizes(window_sizes_s)
    masks = {m: policy.publishable(enriched, m) for m in METRIC_COLUMNS}
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

    columns = _Columns.of(rows, masks)
    if columns is None:
        return np.zeros(0, PARTIAL_DTYPE), np.zeros(0, PRESENCE_DTYPE)
    ts = rows["ts_ms"]
    rides = rows["ride_id"]
    # Which metrics each reading counts for, as presence bits: a metric's k-anonymity
    # threshold counts the rides that measured it, not every ride through the cell.
    measured = np.zeros(len(rows), dtype=np.int16)
    for m, mask in masks.items():
        measured |= np.where(mask, np.int16(metric_bit(m)), np.int16(0))
    ride_days, _ = local_days_and_hours(ride_starts_ms(rides), day_tz)
    partials: list[np.ndarray] = []
    presence: list[np.ndarray] = []
    for res in res_list:
        cells = parent_cells(rows["cell"], res)
        order = np.lexsort((ts, cells))
        cells_o, ts_o = cells[order], ts[order]
        sorted_columns = columns.take(order)
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
                    measured=measured[order],
                    noise_energy=sorted_columns.energy,
                )
            )
            partials.append(
                _partials(
                    sorted_columns, res=res, window_s=window_s, cells=cells_o, starts=starts_o
                )
            )
    return np.concatenate(partials), np.concatenate(presence)


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
    def of(cls, rows: np.ndarray, masks: dict[Metric, np.ndarray]) -> _Columns | None:
        metrics = [m for m, mask in masks.items() if mask.any()]
        if not metrics:
            return None
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

    def take(self, order: np.ndarray) -> _Columns:
        """The same columns with the readings in ``order``."""
        return _Columns(
            self.metrics,
            self.counted[:, order],
            self.values[:, order],
            self.low[:, order],
            self.high[:, order],
            self.bins[:, order],
            self.noise,
            self.seconds[order],
            self.energy[order],
            self.lamax_db[order],
        )


def _partials(
    columns: _Columns,
    *,
    res: int,
    window_s: int,
    cells: np.ndarray,
    starts: np.ndarray,
) -> np.ndarray:
    """Partials of every metric at one resolution and window size, metric by metric;
    ``columns``, ``cells`` and ``starts`` are sorted by (cell, start)."""
    firsts = group_starts(cells, starts)
    groups, width = len(firsts), len(columns.metrics)
    if groups == 0:
        return np.zeros(0, dtype=PARTIAL_DTYPE)
    values = columns.values
    n = np.add.reduceat(columns.counted, firsts, axis=1, dtype=np.int64)  # (metrics, groups)
    sums = np.add.reduceat(values, firsts, axis=1)
    sumsq = np.add.reduceat(values * values, firsts, axis=1)
    low = np.minimum.reduceat(columns.low, firsts, axis=1)
    high = np.maximum.reduceat(columns.high, firsts, axis=1)
    sizes = np.diff(np.append(firsts, values.shape[1]))
    group = np.repeat(np.arange(groups) * (width * HIST_BINS), sizes)
    slot = columns.bins + group
    hist = np.bincount(slot[columns.counted], minlength=groups * width * HIST_BINS).reshape(
        groups, width, HIST_BINS
    )
    # Metric by metric (the row-major order of the (metrics, groups) arrays), only the
    # cell-windows where the metric counted at least one reading.
    keep = n.ravel() > 0
    out = np.zeros(int(keep.sum()), dtype=PARTIAL_DTYPE)
    out["metric"] = np.repeat(columns.metrics, groups)[keep]
    out["resolution"] = res
    out["cell"] = np.tile(cells[firsts], width)[keep]
    out["window_s"] = window_s
    out["window_start_ms"] = np.tile(starts[firsts], width)[keep]
    out["n"] = n.ravel()[keep]
    out["sum"] = sums.ravel()[keep]
    out["sumsq"] = sumsq.ravel()[keep]
    out["min"] = low.ravel()[keep]
    out["max"] = high.ravel()[keep]
    out["hist"] = hist.transpose(1, 0, 2).reshape(-1, HIST_BINS)[keep]
    out["lamax_db"] = np.nan
    if columns.noise is not None:
        noisy = out["metric"] == int(Metric.NOISE)
        heard = n[columns.noise] > 0
        out["energy"][noisy] = np.add.reduceat(columns.energy, firsts)[heard]
        out["duration_s"][noisy] = np.add.reduceat(columns.seconds, firsts)[heard]
        out["lamax_db"][noisy] = np.fmax.reduceat(columns.lamax_db, firsts)[heard]
    return out


def _presence(
    *,
    res: int,
    window_s: int,
    cells: np.ndarray,
    starts: np.ndarray,
    rides: np.ndarray,
    days: np.ndarray,
    measured: np.ndarray,
    noise_energy: np.ndarray,
) -> np.ndarray:
    """One row per distinct (cell, window, ride) among rows sorted by (cell, time), with
    the metrics the ride measured there, its readings and its noise energy there."""
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
    if len(firsts):
        out["metrics"] = np.bitwise_or.reduceat(measured[order], firsts)
        # Every row here counts for at least one metric (aggregate kept only those).
        out["readings"] = np.diff(np.append(firsts, len(order)))
        out["noise_energy"] = np.add.reduceat(noise_energy[order], firsts)
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
