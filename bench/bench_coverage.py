"""Coverage of the API's 95 % intervals against the simulator's ground truth (on demand).

    .venv/bin/python bench/bench_coverage.py [--bikes 30] [--hours 5]
                                             [--seeds 7 23 31 47] [--interval-s 2]
                                             [--scan-rho]

A fleet is simulated (simulators.fleet, no broker and no database: the numbers
under test are api/stats.py's, fed the statistics a cell-hour's merged partials
give). Every deliverable reading the pipeline keeps by default
(``TruthFlag.default_excluded``, as ``TruthRecord.expected_aggregates``) is binned
by its reported position at the finest resolution and taken to its parents at
7–10, by its reported time into hours; a ride is a kit's boot split at gaps over
20 minutes (stream.core.rides). The truth of a cell-hour is the field over the
same readings' true places and times (the energy mean for noise), what
``expected_aggregates`` calls ``true_mean``.

Per metric and resolution, for the intervals as they were ("before": the mean of
the readings, for noise of the dB values, ± t(R − 1)·s/√R) and as they are
("after": api.stats.mean_interval, rounded outward): coverage of the truth among
cell-hours that have an interval (and among those with under 10 % of their
readings above 75 % RH, where optical PM reads high), the share without one, the median half-width,
and the bias and RMSE of the shown value (the mean; LAeq for noise) against the
truth. ``--scan-rho`` prints coverage for a range of intra-ride correlations, how
api.stats.INTRA_RIDE_CORRELATION was chosen. Writes bench/results/coverage.json
and bench/results/coverage.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.stats import (  # noqa: E402
    INTRA_RIDE_CORRELATION,
    mean_interval,
    round_interval,
    rounded,
    t975,
)
from simulators.fleet import Fleet, SimulationConfig  # noqa: E402
from simulators.truthflags import TruthFlag  # noqa: E402
from storage.merged_stats import STATS_DTYPE  # noqa: E402
from stream.core.partials import Metric  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RESOLUTIONS = (7, 8, 9, 10)
METRICS = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2, Metric.NOISE)
_COLUMN = {
    Metric.PM1: "pm1_ugm3",
    Metric.PM25: "pm25_ugm3",
    Metric.PM10: "pm10_ugm3",
    Metric.NO2: "no2_ugm3",
    Metric.NOISE: "noise_laeq_db",
}
RIDE_GAP_MS = 20 * 60 * 1000  # stream.core.rides.RideConfig.gap_s
#: STATS_DTYPE and the share of the cell-hour's readings taken above 75 % RH, where
#: optical PM reads high (docs/statistics.md, "What the interval does not cover").
_ROW_DTYPE = np.dtype(
    [*((name, STATS_DTYPE[name]) for name in STATS_DTYPE.names or ()), ("humid_share", "<f8")]
)


def simulate(bikes: int, hours: float, seed: int, interval_s: float) -> np.ndarray:
    run = Fleet(
        SimulationConfig(
            n_bikes=bikes, duration_s=hours * 3600, seed=seed, reading_interval_s=interval_s
        )
    ).run()
    for _ in run:
        pass
    assert run.truth is not None
    r = run.truth.readings
    keep = (r["flags"] & int(TruthFlag.undeliverable() | TruthFlag.default_excluded())) == 0
    keep &= np.isfinite(r["lat_deg"]) & np.isfinite(r["lon_deg"])
    out: np.ndarray = r[keep]
    return out


def ride_ids(r: np.ndarray) -> np.ndarray:
    order = np.lexsort((r["ts_ms"], r["boot_id"], r["kit_id"]))
    k, b, t = r["kit_id"][order], r["boot_id"][order], r["ts_ms"][order]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1]) | (np.diff(t) > RIDE_GAP_MS)
    ids = np.empty(len(r), dtype=np.int64)
    ids[order] = np.cumsum(new)
    return ids


def cell_hours(
    r: np.ndarray, cells: np.ndarray, rides: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """STATS_DTYPE rows per cell-hour (what the API reads) and the true value of each."""
    col = _COLUMN[metric]
    f = np.isfinite(r[col])
    v, tv = r[col][f].astype(np.float64), r[f"true_{col}"][f].astype(np.float64)
    w = r["interval_ms"][f].astype(np.float64) / 1000.0
    hour = r["ts_ms"][f] // 3_600_000
    _, g = np.unique(np.stack([cells[f], hour]), axis=1, return_inverse=True)
    g = g.ravel()
    size = int(g.max()) + 1
    n = np.bincount(g, minlength=size).astype(np.float64)
    s = np.bincount(g, v, size)
    ss = np.bincount(g, v * v, size)
    stats = np.zeros(size, dtype=_ROW_DTYPE)
    stats["n"] = n
    stats["mean"] = s / n
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["std"] = np.where(n > 1, np.sqrt(np.maximum(ss - s * s / n, 0) / (n - 1)), np.nan)
    stats["min"] = np.full(size, np.inf)
    stats["max"] = np.full(size, -np.inf)
    np.minimum.at(stats["min"], g, v)
    np.maximum.at(stats["max"], g, v)
    _, gr = np.unique(np.stack([g, rides[f]]), axis=1, return_inverse=True)
    owner = np.zeros(int(gr.max()) + 1, dtype=np.int64)
    owner[gr.ravel()] = g
    stats["rides"] = np.bincount(owner, minlength=size)
    humid = (r["flags"][f] & int(TruthFlag.HUMID)) != 0
    stats["humid_share"] = np.bincount(g, humid, size) / n
    if metric is Metric.NOISE:
        dur = np.bincount(g, w, size)
        stats["laeq_db"] = 10 * np.log10(np.bincount(g, w * 10 ** (v / 10), size) / dur)
        truth = 10 * np.log10(np.bincount(g, w * 10 ** (tv / 10), size) / dur)
    else:
        stats["laeq_db"] = np.nan
        truth = np.bincount(g, tv, size) / n
    return stats, truth


def before(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interval as it was: the arithmetic mean ± t(R − 1)·s/√R, NaN below two rides."""
    rides = stats["rides"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t975(rides - 1) * stats["std"] / np.sqrt(rides)
    return stats["mean"] - half, stats["mean"] + half


def judge_rows(
    stats: np.ndarray, truth: np.ndarray, metric: Metric, *, new: bool, rho: float | None = None
) -> dict[str, float]:
    if new:
        iv = round_interval(mean_interval(stats, metric, rho=rho), metric)
        low, high = iv.low, iv.high
        shown_stats = rounded(stats, metric)
        shown = shown_stats["laeq_db"] if metric is Metric.NOISE else shown_stats["mean"]
    else:
        low, high = before(stats)
        shown = stats["mean"]  # the API showed, and put its interval on, the dB mean
    has = np.isfinite(low) & np.isfinite(high)
    dry = stats["humid_share"] < 0.1
    error = shown - truth
    covered = (low <= truth) & (truth <= high)
    return {
        "cell_hours": len(stats),
        "with_interval": int(has.sum()),
        "no_interval_share": round(1 - float(has.mean()), 4),
        "coverage": round(float(covered[has].mean()), 4) if has.any() else float("nan"),
        "coverage_dry": (
            round(float(covered[has & dry].mean()), 4) if (has & dry).any() else float("nan")
        ),
        "negative_lower": int(np.sum(has & (low < 0))) if metric is not Metric.NOISE else 0,
        "median_half_width": round(float(np.median((high - low)[has]) / 2), 3),
        "bias": round(float(np.mean(error)), 4),
        "rmse": round(float(np.sqrt(np.mean(error**2))), 4),
    }


def pooled(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of seed "all": coverage over every run's cell-hours with an interval, and the
    range of the runs' coverages beside it."""
    out: list[dict[str, object]] = []
    keys = sorted(
        {(str(r["metric"]), int(str(r["resolution"])), str(r["intervals"])) for r in results},
        key=lambda k: (k[1], k[0], k[2] != "before"),
    )
    for metric, res, label in keys:
        rows = [
            r
            for r in results
            if (r["metric"], r["resolution"], r["intervals"]) == (metric, res, label)
        ]
        weights = np.array([float(str(r["with_interval"])) for r in rows])
        cov = np.array([float(str(r["coverage"])) for r in rows])
        ok = weights > 0
        out.append(
            {
                "seed": "all",
                "metric": metric,
                "resolution": res,
                "intervals": label,
                "cell_hours": sum(int(str(r["cell_hours"])) for r in rows),
                "with_interval": int(weights.sum()),
                "coverage": round(float(np.average(cov[ok], weights=weights[ok])), 4),
                "coverage_range": f"{cov[ok].min():.3f}–{cov[ok].max():.3f}",
                **{
                    k: round(float(np.mean([float(str(r[k])) for r in rows])), 4)
                    for k in (
                        "no_interval_share",
                        "coverage_dry",
                        "median_half_width",
                        "bias",
                        "rmse",
                    )
                },
                "negative_lower": sum(int(str(r["negative_lower"])) for r in rows),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bikes", type=int, default=30)
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[7, 23, 31, 47],
        help="one simulated fleet per seed (ρ was chosen on 7, 23 and 31; 47 is held out)",
    )
    ap.add_argument("--interval-s", type=float, default=2.0, help="seconds between readings")
    ap.add_argument("--scan-rho", action="store_true", help="coverage for ρ = 0.05 … 1")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t0 = time.monotonic()
    results: list[dict[str, object]] = []
    runs: list[dict[str, object]] = []
    for seed in args.seeds:
        r = simulate(args.bikes, args.hours, seed, args.interval_s)
        rides = ride_ids(r)
        runs.append({"seed": seed, "readings": len(r), "rides": len(np.unique(rides))})
        finest = np.fromiter(
            (
                h3.latlng_to_cell(a, b, RESOLUTIONS[-1])
                for a, b in zip(r["lat_deg"].tolist(), r["lon_deg"].tolist(), strict=True)
            ),
            dtype=np.int64,
            count=len(r),
        )
        for res in RESOLUTIONS:
            cells = (
                finest
                if res == RESOLUTIONS[-1]
                else np.fromiter(
                    (h3.cell_to_parent(c, res) for c in finest.tolist()),
                    dtype=np.int64,
                    count=len(finest),
                )
            )
            for metric in METRICS:
                stats, truth = cell_hours(r, cells, rides, metric)
                if args.scan_rho:
                    scan = {
                        rho: judge_rows(stats, truth, metric, new=True, rho=rho)["coverage"]
                        for rho in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)
                    }
                    print(
                        f"seed {seed} {metric.api_name:6} r{res} "
                        + " ".join(f"{rho}:{c:.3f}" for rho, c in scan.items())
                    )
                    continue
                for label, new in (("before", False), ("after", True)):
                    results.append(
                        {
                            "seed": seed,
                            "metric": metric.api_name,
                            "resolution": res,
                            "intervals": label,
                            **judge_rows(stats, truth, metric, new=new),
                        }
                    )
    if args.scan_rho:
        return
    results += pooled(results)
    header = (
        "seed",
        "metric",
        "resolution",
        "intervals",
        "cell_hours",
        "no_interval_share",
        "coverage",
        "coverage_range",
        "coverage_dry",
        "negative_lower",
        "median_half_width",
        "bias",
        "rmse",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row.get(h, "")) for h in header) + " |" for row in results]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    meta = {
        "bikes": args.bikes,
        "hours": args.hours,
        "runs": runs,
        "reading_interval_s": args.interval_s,
        "intra_ride_correlation": {m.api_name: INTRA_RIDE_CORRELATION[m] for m in METRICS},
        "seconds": round(time.monotonic() - t0, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coverage.json").write_text(
        json.dumps({"run": meta, "results": results}, indent=2) + "\n"
    )
    (RESULTS / "coverage.md").write_text(
        "# Coverage of the 95 % intervals against the simulator's truth\n\n"
        f"`bench/bench_coverage.py`, {json.dumps(meta)}\n\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
