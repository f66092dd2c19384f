"""Coverage of the API's 95 % intervals against the simulator's ground truth (on demand).

    .venv/bin/python bench/bench_coverage.py [--bikes 30] [--hours 5]
                                             [--seeds 7 23 31 47 11 13 17 19 29 37 41 43]
                                             [--interval-s 2] [--no-write]

Fleets are simulated and their cell-hours taken as the API reads them, beside the
true means of the same readings (simulators/coverage.py: no broker and no database;
the numbers under test are api/stats.py's). Per metric, resolution and fleet, for
the intervals as they were and as they are:

- ``rides``: the first interval, the arithmetic mean (the dB mean for noise)
  ± t(R − 1)·s/√R;
- ``design_effect``: the interval of 2026-12 (commit d4db462): the mean (LAeq) with
  Kish's design effect 1 + (n/R − 1)·ρ on the readings' spread, ρ a constant per
  metric, on the log scale (the energy scale for noise);
- ``budget``: api.stats.mean_interval, the kits' error budget (docs/statistics.md),
  its bounds rounded to the nearest 0.1 as the API shows them (api.stats.round_interval);
- ``budget_outward``: the same bounds rounded outward instead (the API's rounding
  at commit 9bfd2ba), to show what rounding alone does;
- ``budget_realized_kits``: the same with the error model of the kits this fleet
  happened to draw (their offsets' and gains' root mean square, not the spec's): not
  what the API can know, but what tells a fleet's luck from the method's fault.

Coverage of the truth among cell-hours that have an interval (and among those with
under 10 % of their readings above 75 % RH), its binomial standard error
√(0.95·0.05/N) beside it, the share without an interval, the median half-width and
the bias and RMSE of the shown value (the mean; LAeq for noise) against the truth.
Rows of seed "all" pool the fleets: coverage over all their cell-hours, the range and
standard deviation of the fleets' own. Writes bench/results/coverage.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.stats import (  # noqa: E402
    DECIMALS,
    SIMULATED_FLEET,
    ErrorModel,
    KitErrors,
    mean_interval,
    round_interval,
    rounded,
    t975,
)
from simulators.coverage import (  # noqa: E402
    CellHours,
    SimulatedFleet,
    cell_hours,
    cells_by_resolution,
    simulate,
)
from stream.core.partials import Metric  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RESOLUTIONS = (7, 8, 9, 10)
METRICS = (Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2, Metric.NOISE)
SEEDS = (7, 23, 31, 47, 11, 13, 17, 19, 29, 37, 41, 43)
METHODS = ("rides", "design_effect", "budget", "budget_outward", "budget_realized_kits")
#: The intra-ride correlations of the design-effect interval (api/stats.py at d4db462).
_RHO = {Metric.PM1: 0.4, Metric.PM25: 0.4, Metric.PM10: 0.4, Metric.NO2: 0.5, Metric.NOISE: 0.3}
_A = math.log(10.0) / 10.0
_NOMINAL = 0.95

Interval = tuple[np.ndarray, np.ndarray, np.ndarray]  # low, high, shown value


def rides_interval(ch: CellHours, metric: Metric) -> Interval:
    """The first interval: the arithmetic mean ± t(R − 1)·s/√R, NaN below two rides."""
    stats = ch.stats
    rides = stats["rides"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t975(rides - 1) * stats["std"] / np.sqrt(rides)
    del metric  # the dB mean for noise too: what the API showed and put it on
    return stats["mean"] - half, stats["mean"] + half, stats["mean"]


def design_effect_interval(ch: CellHours, metric: Metric) -> Interval:
    """The interval of d4db462 (api/stats.py then), rounded outward as the API did."""
    stats = ch.stats
    n, rides = stats["n"].astype(np.float64), stats["rides"].astype(np.float64)
    mean, std = stats["mean"], stats["std"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_eff = n / (1.0 + (n / rides - 1.0) * _RHO[metric])
        t_over_root_n = t975(np.floor(n_eff) - 1) / np.sqrt(n_eff)
        if metric is Metric.NOISE:
            centre = stats["laeq_db"]
            mu = np.exp(_A * centre)
            top, bottom = np.exp(_A * stats["max"]), np.exp(_A * stats["min"])
            bound = np.sqrt(np.maximum((top - mu) * (mu - bottom), 0.0)) / mu
            cv = np.fmin(np.sqrt(np.expm1((_A * std) ** 2)), bound)
            half = t_over_root_n * cv / _A
            low, high = centre - half, centre + half
        else:
            centre = mean
            half_log = t_over_root_n * std / mean
            low, high = mean * np.exp(-half_log), mean * np.exp(half_log)
    bad = ~(rides >= 2) | ~(n >= 2)
    low[bad] = high[bad] = np.nan
    scale = 10.0 ** DECIMALS[metric]
    return np.floor(low * scale + 1e-9) / scale, np.ceil(high * scale - 1e-9) / scale, centre


def budget_interval(
    model: ErrorModel, *, outward: bool = False
) -> Callable[[CellHours, Metric], Interval]:
    def interval(ch: CellHours, metric: Metric) -> Interval:
        raw = mean_interval(ch.stats, metric, covariate=ch.covariate, model=model)
        if outward:
            scale = 10.0 ** DECIMALS[metric]
            low = np.floor(raw.low * scale + 1e-9) / scale
            high = np.ceil(raw.high * scale - 1e-9) / scale
        else:
            iv = round_interval(raw, metric)
            low, high = iv.low, iv.high
        shown = rounded(ch.stats, metric)
        return low, high, shown["laeq_db"] if metric is Metric.NOISE else shown["mean"]

    return interval


def realized_model(fleet: SimulatedFleet, hours: float) -> tuple[ErrorModel, dict[str, float]]:
    """The simulated fleet's error model with the errors its kits drew: each kit error's
    root mean square over the fleet (about zero, so a fleet whose kits read high on
    average counts that too)."""
    cals = list(fleet.calibrations.values())

    def rms(values: list[float]) -> float:
        return float(np.sqrt(np.mean(np.square(values))))

    spec = SIMULATED_FLEET.kits
    pm_offset = rms([c.pm_offset_ugm3 for c in cals])
    pm_gain = rms([c.pm_gain - 1 for c in cals])
    no2_base = rms(
        [
            c.no2_offset_ugm3 + c.no2_drift_ugm3_per_day * (c.deployed_days + hours / 48)
            for c in cals
        ]
    )
    no2_gain = rms([c.no2_gain - 1 for c in cals])
    no2_temp = rms([c.no2_temperature_coeff - SIMULATED_FLEET.no2_temp_coeff for c in cals])
    noise = rms([c.noise_offset_db for c in cals])
    humidity = rms([c.humidity_offset_pct for c in cals])
    kits = dict(spec)
    for metric in (Metric.PM1, Metric.PM25, Metric.PM10):
        kits[metric] = dataclasses.replace(spec[metric], kit_sd=pm_offset, kit_gain_sd=pm_gain)
    kits[Metric.NO2] = dataclasses.replace(spec[Metric.NO2], kit_sd=no2_base, kit_gain_sd=no2_gain)
    kits[Metric.NOISE] = dataclasses.replace(spec[Metric.NOISE], kit_sd=noise)
    kits[Metric.HUMIDITY] = KitErrors(kit_sd=humidity, reading_sd=spec[Metric.HUMIDITY].reading_sd)
    model = dataclasses.replace(
        SIMULATED_FLEET, kits=MappingProxyType(kits), no2_temp_coeff_sd=no2_temp
    )
    drawn = {
        "pm_offset_rms_ugm3": pm_offset,
        "pm_gain_rms": pm_gain,
        "no2_baseline_rms_ugm3": no2_base,
        "no2_gain_rms": no2_gain,
        "no2_temp_coeff_rms": no2_temp,
        "noise_offset_rms_db": noise,
        "humidity_offset_rms_pct": humidity,
    }
    return model, {k: round(v, 3) for k, v in drawn.items()}


def judge_rows(ch: CellHours, metric: Metric, iv: Interval) -> dict[str, float]:
    low, high, shown = iv
    truth = ch.truth
    has = np.isfinite(low) & np.isfinite(high)
    dry = ch.humid_share < 0.1
    error = shown - truth
    covered = (low <= truth) & (truth <= high)
    n = int(has.sum())
    return {
        "cell_hours": len(truth),
        "with_interval": n,
        "no_interval_share": round(1 - float(has.mean()), 4),
        "coverage": round(float(covered[has].mean()), 4) if n else float("nan"),
        "binomial_se": round(math.sqrt(_NOMINAL * (1 - _NOMINAL) / n), 4) if n else float("nan"),
        "coverage_dry": (
            round(float(covered[has & dry].mean()), 4) if (has & dry).any() else float("nan")
        ),
        "negative_lower": int(np.sum(has & (low < 0))) if metric is not Metric.NOISE else 0,
        "median_half_width": round(float(np.median((high - low)[has]) / 2), 3)
        if n
        else float("nan"),
        "bias": round(float(np.mean(error)), 4),
        "rmse": round(float(np.sqrt(np.mean(error**2))), 4),
    }


def pooled(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of seed "all": coverage over every fleet's cell-hours with an interval, the
    range and standard deviation of the fleets' own, and their mean binomial error."""
    out: list[dict[str, object]] = []
    keys = sorted(
        {(str(r["metric"]), int(str(r["resolution"])), str(r["intervals"])) for r in results},
        key=lambda k: (k[1], [m.api_name for m in METRICS].index(k[0]), METHODS.index(k[2])),
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
        total = int(weights.sum())
        out.append(
            {
                "seed": "all",
                "metric": metric,
                "resolution": res,
                "intervals": label,
                "cell_hours": sum(int(str(r["cell_hours"])) for r in rows),
                "with_interval": total,
                "coverage": round(float(np.average(cov[ok], weights=weights[ok])), 4),
                "binomial_se": round(math.sqrt(_NOMINAL * (1 - _NOMINAL) / total), 4),
                "coverage_range": f"{cov[ok].min():.3f}–{cov[ok].max():.3f}",
                "fleet_sd": round(float(np.std(cov[ok], ddof=1)), 4) if ok.sum() > 1 else 0.0,
                "fleet_binomial_se": round(
                    float(np.mean([float(str(r["binomial_se"])) for r in rows])), 4
                ),
                **{
                    # nanmean: a fleet in humid air all the time has no dry cell-hours
                    k: round(float(np.nanmean([float(str(r[k])) for r in rows])), 4)
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


def table(rows: list[dict[str, object]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row.get(h, "")) for h in header) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bikes", type=int, default=30)
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="a fleet per seed")
    ap.add_argument("--interval-s", type=float, default=2.0, help="seconds between readings")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t0 = time.monotonic()
    results: list[dict[str, object]] = []
    runs: list[dict[str, object]] = []
    for seed in args.seeds:
        fleet = simulate(args.bikes, args.hours, seed, args.interval_s)
        realized, drawn = realized_model(fleet, args.hours)
        r = fleet.readings
        runs.append(
            {
                "seed": seed,
                "readings": len(r),
                "rides": len(np.unique(fleet.rides)),
                "humid_share": round(float(np.mean(r["humidity_pct"] > 75.0)), 3),
                "mean_temperature_c": round(float(np.mean(r["temperature_c"])), 1),
                "quadratic_mean_speed_mps": round(fleet.quadratic_mean_speed_mps, 2),
                "kits_drawn": drawn,
            }
        )
        methods = {
            "rides": rides_interval,
            "design_effect": design_effect_interval,
            "budget": budget_interval(SIMULATED_FLEET),
            "budget_outward": budget_interval(SIMULATED_FLEET, outward=True),
            "budget_realized_kits": budget_interval(realized),
        }
        cells = cells_by_resolution(r, RESOLUTIONS)
        for res in RESOLUTIONS:
            for metric in METRICS:
                ch = cell_hours(r, cells[res], fleet.rides, metric)
                for label, method in methods.items():
                    results.append(
                        {
                            "seed": seed,
                            "metric": metric.api_name,
                            "resolution": res,
                            "intervals": label,
                            **judge_rows(ch, metric, method(ch, metric)),
                        }
                    )
        print(f"seed {seed}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    pooled_rows = pooled(results)
    summary = table(
        pooled_rows,
        (
            "metric",
            "resolution",
            "intervals",
            "with_interval",
            "coverage",
            "binomial_se",
            "coverage_range",
            "fleet_sd",
            "fleet_binomial_se",
            "coverage_dry",
            "no_interval_share",
            "negative_lower",
            "median_half_width",
            "bias",
            "rmse",
        ),
    )
    per_fleet = table(
        results,
        (
            "seed",
            "metric",
            "resolution",
            "intervals",
            "with_interval",
            "coverage",
            "binomial_se",
            "coverage_dry",
            "no_interval_share",
            "negative_lower",
            "median_half_width",
            "bias",
            "rmse",
        ),
    )
    print(summary)
    if args.no_write:
        return
    meta = {
        "bikes": args.bikes,
        "hours": args.hours,
        "reading_interval_s": args.interval_s,
        "runs": runs,
        "seconds": round(time.monotonic() - t0, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coverage.json").write_text(
        json.dumps({"run": meta, "results": results + pooled_rows}, indent=2) + "\n"
    )
    (RESULTS / "coverage.md").write_text(
        "# Coverage of the 95 % intervals against the simulator's truth\n\n"
        f"`bench/bench_coverage.py`, {json.dumps(meta)}\n\n"
        "## Pooled over the fleets\n\n" + summary + "\n\n## Per fleet\n\n" + per_fleet + "\n"
    )


if __name__ == "__main__":
    main()
