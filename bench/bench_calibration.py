"""Calibration against reference stations, measured on the simulator's ground truth (on demand).

    .venv/bin/python bench/bench_calibration.py [--seed 3] [--bikes 10] [--days 14]
                                                [--interval-s 10] [--window-days 30]
                                                [--scan-distance]

A campaign of daily runs (simulators.reference.simulate_campaign: kits with the
simulator's drawn gain, offset, humidity response, NO2 drift and temperature
dependence; one traffic and three background stations reporting hourly means of
the truth) is paired (stream.core.calibration.colocate, default distances) and
fitted over the window ending at the campaign's end (calibration_fit). Printed:

- how many kits got their own correction and how many the fleet's, per metric;
- for kits with their own: the share whose drawn gain and offset lie within 3σ
  of the estimate (NO2: the offset at the pairs' mean time, drift included);
- RMSE of cell-hour means (H3 resolutions 9 and 10, reported positions, hours
  of the epoch) against the truth over the same readings, raw and corrected,
  over all kits and over the kits with a correction of their own.

``--scan-distance`` prints how the *true* field averaged over a kit's readings
near a station differs from the station's hourly value, by station kind and
radius: the measurement behind the default distances (docs/calibration.md).
No database, no broker; numpy only. Nothing is asserted: the tests do that.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from simulators.fleet import SimulationConfig
from simulators.reference import (
    Campaign,
    CampaignSpec,
    cell_hour_rmse,
    kit_error_z,
    simulate_campaign,
)
from stream.core.calibration import PairingConfig, colocate
from stream.core.calibration_corrections import CorrectionSet, apply_corrections
from stream.core.calibration_fit import FitConfig, fit_corrections

METRICS = ("pm25_ugm3", "pm10_ugm3", "no2_ugm3")


def recovery(c: Campaign, pairs: np.ndarray, cs: CorrectionSet, metric: str) -> tuple[float, float]:
    """The share of kits with their own correction whose drawn gain and offset lie within
    3σ of the estimate."""
    zg, zo = kit_error_z(c, pairs, cs, metric)
    if not len(zg):
        return float("nan"), float("nan")
    return float(np.mean(np.abs(zg) < 3)), float(np.mean(np.abs(zo) < 3))


def scan_distance(c: Campaign) -> None:
    r = c.readings.copy()
    for m in METRICS:
        r[m] = r[f"true_{m}"]
    kinds = {s.station_id: s.kind for s in c.stations}
    print("\nTrue kit-hour mean near a station vs the station's hourly value (bias, RMS, %):")
    print(f"{'kind':<11} {'metric':<10} " + " ".join(f"{d:>13}" for d in (25, 50, 100, 150, 200)))
    rows: dict[tuple[str, str], list[str]] = {}
    for d in (25, 50, 100, 150, 200):
        cfg = PairingConfig(max_distance_m=d, traffic_max_distance_m=d)
        p = colocate(r, c.station_array, c.reference, metrics=METRICS, config=cfg)
        kind = np.array([kinds[s] for s in p["station_id"].tolist()])
        for k in ("traffic", "background"):
            for m in ("pm25_ugm3", "no2_ugm3"):
                q = p[(kind == k) & (p["metric"] == m)]
                rel = (q["kit_mean"] - q["reference"]) / q["reference"] * 100
                cell = (
                    f"{rel.mean():+5.1f} {np.sqrt(np.mean(rel**2)):4.1f} n{len(q):<3}"
                    if len(q)
                    else "-"
                )
                rows.setdefault((k, m), []).append(cell)
    for (k, m), cells in rows.items():
        print(f"{k:<11} {m:<10} " + " ".join(f"{x:>13}" for x in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--bikes", type=int, default=10)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--interval-s", type=float, default=10.0)
    ap.add_argument("--window-days", type=float, default=30.0)
    ap.add_argument("--scan-distance", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    config = SimulationConfig(
        n_bikes=args.bikes,
        duration_s=5 * 3600,
        seed=args.seed,
        reading_interval_s=args.interval_s,
    )
    c = simulate_campaign(config, CampaignSpec(days=args.days))
    t1 = time.perf_counter()
    pairs = colocate(c.readings, c.station_array, c.reference, metrics=METRICS)
    cs = fit_corrections(pairs, end_ms=c.end_ms, config=FitConfig(window_days=args.window_days))
    t2 = time.perf_counter()
    print(
        f"seed {args.seed}: {args.bikes} kits × {args.days} days of 5 h rounds, a reading every "
        f"{args.interval_s:g} s: {len(c.readings):,} readings, {len(c.stations)} stations "
        f"({', '.join(s.kind for s in c.stations)}); simulated in {t1 - t0:.1f} s, "
        f"paired and fitted in {t2 - t1:.2f} s"
    )
    print(
        f"\n{'metric':<10} {'pairs':>6} {'own/fleet':>9} {'gain ≤3σ':>9} {'offset ≤3σ':>10}"
        f"  {'cell-hour RMSE raw → corrected (all kits; own-correction kits)':<60}"
    )
    r = c.readings
    for metric in METRICS:
        corrected, _, _ = apply_corrections(r, cs, metric)
        mine = [c_ for (k, m), c_ in cs.kits.items() if m == metric]
        own_kits = [int(c_.kit_id or 0) for c_ in mine if c_.source == "kit"]
        own = np.isin(r["kit_id"], own_kits)
        g3, o3 = recovery(c, pairs, cs, metric)
        parts = []
        for res in (9, 10):
            raw_all = cell_hour_rmse(r, r[metric].astype(np.float64), metric, res)
            cor_all = cell_hour_rmse(r, corrected, metric, res)
            raw_own = cell_hour_rmse(r[own], r[metric][own].astype(np.float64), metric, res)
            cor_own = cell_hour_rmse(r[own], corrected[own], metric, res)
            parts.append(f"r{res}: {raw_all:.2f} → {cor_all:.2f}; {raw_own:.2f} → {cor_own:.2f}")
        n_pairs = int(np.sum(pairs["metric"] == metric))
        print(
            f"{metric:<10} {n_pairs:>6} {len(own_kits):>4}/{len(mine) - len(own_kits):<4} "
            f"{g3:>9.0%} {o3:>10.0%}  {' | '.join(parts)}"
        )
    fleet_notes = sorted(
        {f"{k}: {c_.note}" for (k, m), c_ in cs.kits.items() if c_.source == "fleet"}
    )
    if fleet_notes:
        print("\nfleet fallbacks:", *fleet_notes, sep="\n  ")
    if args.scan_distance:
        scan_distance(c)


if __name__ == "__main__":
    main()
