"""Cell-hours of a simulated fleet as the API reads them, beside their true means.

For checking the API's intervals against the ground truth (bench/bench_coverage.py
and tests/simulators/test_coverage.py use the same code): a fleet is simulated (no
broker, no database), its deliverable readings are kept as the pipeline keeps them
by default (``TruthFlag.default_excluded``; PM also leaves out readings at or above
``QaConfig.fog_pm_rh_pct``, as ``QaFlag.FOG_PM`` does), binned by their reported
position at the finest resolution and taken to their parents, by their reported
time into hours; a ride is a kit's boot split at gaps over
``stream.core.rides.RideConfig.gap_s``. Per cell-hour and metric come the statistics
``storage.cell_stats`` would return (``STATS_DTYPE``, the rides' weights included),
the same cell-hours' humidity or temperature (the interval's covariate,
``api.stats.COVARIATES``), and the truth over the same readings' true places and
times (the energy mean for noise), as ``TruthRecord.expected_aggregates`` has it.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from simulators.fleet import Fleet, SimulationConfig
from simulators.sensors import KitCalibration
from simulators.truthflags import TruthFlag
from storage.merged_stats import STATS_DTYPE
from stream.core.binning import cells_at
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.qa import QaConfig
from stream.core.rides import RideConfig

HOUR_MS = 3_600_000
_PM = (Metric.PM1, Metric.PM25, Metric.PM10)
#: The covariate of each metric whose interval needs one (api.stats.COVARIATES).
_COVARIATE = {**dict.fromkeys(_PM, Metric.HUMIDITY), Metric.NO2: Metric.TEMPERATURE}


@dataclass(frozen=True, slots=True)
class SimulatedFleet:
    """A fleet's kept readings, their rides, and what the fleet's kits are."""

    readings: np.ndarray  # simulators.truth.TRUTH_DTYPE rows the pipeline keeps
    rides: np.ndarray  # ride id per reading
    calibrations: dict[int, KitCalibration]  # by kit id
    #: √(mean of max(speed, 0.5 m/s)²) over the readings: the speed the energy mean of
    #: the wind on the microphones answers to (api.stats.SIMULATED_FLEET).
    quadratic_mean_speed_mps: float


@dataclass(frozen=True, slots=True)
class CellHours:
    """One metric's cell-hours at one resolution, row for row."""

    stats: np.ndarray  # storage.merged_stats.STATS_DTYPE
    truth: np.ndarray  # the true mean (LAeq for noise) of the same readings
    covariate: np.ndarray | None  # STATS_DTYPE of the same cell-hours' humidity or temperature
    humid_share: np.ndarray  # share of the readings taken above 75 % RH (true)


def simulate(bikes: int, hours: float, seed: int, interval_s: float) -> SimulatedFleet:
    fleet = Fleet(
        SimulationConfig(
            n_bikes=bikes, duration_s=hours * 3600, seed=seed, reading_interval_s=interval_s
        )
    )
    run = fleet.run()
    for _ in run:
        pass
    assert run.truth is not None
    r = run.truth.readings
    keep = (r["flags"] & int(TruthFlag.undeliverable() | TruthFlag.default_excluded())) == 0
    keep &= np.isfinite(r["lat_deg"]) & np.isfinite(r["lon_deg"])
    kept = r[keep].copy()
    fog = kept["humidity_pct"] >= QaConfig().fog_pm_rh_pct
    for metric in _PM:
        kept[METRIC_COLUMNS[metric]][fog] = np.nan
    speeds = []
    for bike in fleet.bikes:
        mine = kept[kept["kit_id"] == bike.kit_id]
        t_s = (mine["true_ts_ms"] - fleet.config.start_ms) / 1000.0
        speeds.append(bike.trajectory.speed_at(t_s))
    speed = np.maximum(np.concatenate(speeds), 0.5) if speeds else np.ones(1)
    return SimulatedFleet(
        readings=kept,
        rides=ride_ids(kept),
        calibrations={b.kit_id: b.calibration for b in fleet.bikes},
        quadratic_mean_speed_mps=float(np.sqrt(np.mean(speed**2))),
    )


def ride_ids(r: np.ndarray) -> np.ndarray:
    """A ride per kit, boot and stretch without a gap over RideConfig.gap_s."""
    order = np.lexsort((r["ts_ms"], r["boot_id"], r["kit_id"]))
    k, b, t = r["kit_id"][order], r["boot_id"][order], r["ts_ms"][order]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1]) | (np.diff(t) > RideConfig().gap_s * 1000)
    ids = np.empty(len(r), dtype=np.int64)
    ids[order] = np.cumsum(new)
    return ids


def cells_by_resolution(r: np.ndarray, resolutions: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Each reading's cell at every resolution: at the finest, then its parents (as the
    pipeline bins them)."""
    finest = cells_at(r["lat_deg"], r["lon_deg"], max(resolutions))
    out = {max(resolutions): finest}
    for res in resolutions:
        if res not in out:
            out[res] = np.fromiter(
                (h3.cell_to_parent(c, res) for c in finest.tolist()),
                dtype=np.int64,
                count=len(finest),
            )
    return out


def cell_hours(r: np.ndarray, cells: np.ndarray, rides: np.ndarray, metric: Metric) -> CellHours:
    """``metric``'s cell-hours of the readings ``r`` binned into ``cells``."""
    keys = _CellHourKeys.of(cells, r["ts_ms"])
    stats, truth, codes = _stats(r, keys, rides, metric)
    covariate = None
    if metric in _COVARIATE:
        other, _, other_codes = _stats(r, keys, rides, _COVARIATE[metric])
        covariate = np.zeros(len(stats), dtype=STATS_DTYPE)
        for name in STATS_DTYPE.names or ():
            if STATS_DTYPE[name].kind == "f":
                covariate[name] = np.nan
        if len(other_codes):
            at = np.minimum(np.searchsorted(other_codes, codes), len(other_codes) - 1)
            found = other_codes[at] == codes
            covariate[found] = other[at[found]]
    f = np.isfinite(r[METRIC_COLUMNS[metric]])
    humid = (r["flags"][f] & int(TruthFlag.HUMID)) != 0
    g = np.searchsorted(codes, keys.code[f])
    share = np.bincount(g, humid, len(stats)) / stats["n"]
    return CellHours(stats, truth, covariate, share)


@dataclass(frozen=True, slots=True)
class _CellHourKeys:
    """Each reading's (cell, hour) as one sortable integer."""

    code: np.ndarray
    cells: np.ndarray  # the distinct cells, ascending
    hours: int  # hours spanned
    first_hour: int

    @classmethod
    def of(cls, cells: np.ndarray, ts_ms: np.ndarray) -> _CellHourKeys:
        distinct, index = np.unique(cells, return_inverse=True)
        hour = ts_ms // HOUR_MS
        first = int(hour.min()) if len(hour) else 0
        span = int(hour.max()) - first + 1 if len(hour) else 1
        return cls(index.ravel().astype(np.int64) * span + (hour - first), distinct, span, first)

    def cell_and_start(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.cells[codes // self.hours], (codes % self.hours + self.first_hour) * HOUR_MS


def _stats(
    r: np.ndarray, keys: _CellHourKeys, rides: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    col = METRIC_COLUMNS[metric]
    f = np.isfinite(r[col])
    v, tv = r[col][f].astype(np.float64), r[f"true_{col}"][f].astype(np.float64)
    w = r["interval_ms"][f].astype(np.float64) / 1000.0
    codes, g = np.unique(keys.code[f], return_inverse=True)
    g = g.ravel()
    size = len(codes)
    n = np.bincount(g, minlength=size).astype(np.float64)
    s = np.bincount(g, v, size)
    ss = np.bincount(g, v * v, size)
    stats = np.zeros(size, dtype=STATS_DTYPE)
    stats["lat_deg"] = stats["lon_deg"] = stats["correction_u"] = np.nan  # raw values
    stats["metric"] = metric
    stats["cell"], stats["window_start_ms"] = keys.cell_and_start(codes)
    stats["window_s"] = 3600
    stats["n"] = n
    stats["mean"] = s / n
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["std"] = np.where(n > 1, np.sqrt(np.maximum(ss - s * s / n, 0) / (n - 1)), np.nan)
    stats["min"] = np.full(size, np.inf)
    stats["max"] = np.full(size, -np.inf)
    np.minimum.at(stats["min"], g, v)
    np.maximum.at(stats["max"], g, v)
    # Rides that measured the metric in the cell-hour, weighed as the presence rows
    # weigh them (stream.core.aggregate): all their readings there that count for some
    # metric; their noise energy for noise.
    span = int(rides.max()) + 1
    pairs, gr = np.unique(g.astype(np.int64) * span + rides[f], return_inverse=True)
    gr = gr.ravel()
    owner = pairs // span
    stats["rides"] = np.bincount(owner, minlength=size)
    if metric is Metric.NOISE:
        energy = w * 10 ** (v / 10)
        weight = np.bincount(gr, energy, len(pairs))
        duration = np.bincount(g, w, size)
        stats["laeq_db"] = 10 * np.log10(np.bincount(g, energy, size) / duration)
        stats["duration_s"] = duration
        truth = 10 * np.log10(np.bincount(g, w * 10 ** (tv / 10), size) / duration)
    else:
        # Every kept reading counts for some metric: the ride's readings in the cell-hour.
        every = np.searchsorted(codes, keys.code)
        every = np.minimum(every, size - 1)
        inside = codes[every] == keys.code
        code = every[inside].astype(np.int64) * span + rides[inside]
        at = np.minimum(np.searchsorted(pairs, code), len(pairs) - 1)
        hit = pairs[at] == code
        weight = np.bincount(at[hit], minlength=len(pairs)).astype(np.float64)
        stats["laeq_db"] = np.nan
        truth = np.bincount(g, tv, size) / n
    stats["ride_weight"] = np.bincount(owner, weight, size)
    stats["ride_weight_sq"] = np.bincount(owner, weight**2, size)
    return stats, truth, codes
