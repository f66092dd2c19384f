"""What the public loses to k per metric and to the view closed under differencing.

    .venv/bin/python bench/bench_privacy_coverage.py [--bikes 25] [--minutes 240] [--seed 1]

The demo's fleet (``bikesense demo``'s defaults: 25 bikes, 240 minutes, seed 1) is
simulated (simulators.fleet), its deliverable readings go through the stream core's
aggregation and the batch writer into a throwaway PostgreSQL, and for PM2.5 and NO2,
per resolution, hourly and daily windows, the readings and cells the public sees are
counted four ways:

* ``all``: every stored cell-window (what an officer sees);
* ``any_metric``: cell-windows with k rides of any metric, judged on their own (the
  rule before issue 21: not per metric, and not closed under differencing);
* ``per_metric``: k rides that measured the metric, judged on their own (per metric,
  still not closed);
* ``closed``: what the API publishes now, every figure merged from the units
  (resolution 10, hourly windows) with k rides that measured the metric.

Then the attack of issue 21 on the same data, hour by hour: a public parent cell
(resolutions 7–9) minus its public resolution-10 children; ``leaky_parents`` counts the
parent-hours where something is left (readings of children the public may not see),
judged on their own (``per_metric``) and as published (``closed``).

Writes bench/results/privacy_coverage.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import RESULTS, database  # noqa: E402

from simulators.fleet import Fleet, SimulationConfig  # noqa: E402
from simulators.truthflags import TruthFlag  # noqa: E402
from storage.cell_stats import cell_stats  # noqa: E402
from storage.cellwindows import column  # noqa: E402
from storage.selection import BBox, Selection  # noqa: E402
from storage.writer import write_batch  # noqa: E402
from stream.core.aggregate import aggregate  # noqa: E402
from stream.core.batch import ENRICHED_DTYPE  # noqa: E402
from stream.core.partials import Metric  # noqa: E402
from stream.core.rides import ride_id_for  # noqa: E402

RESOLUTIONS = (7, 8, 9, 10)
WINDOWS = (60, 900, 3600, 86400)
K = 3
RIDE_GAP_MS = 20 * 60 * 1000  # stream.core.rides.RideConfig


def enriched(bikes: int, minutes: float, seed: int) -> np.ndarray:
    # The simulator's fixed start, not the demo's "ending now": the same hours every run.
    run = Fleet(SimulationConfig(n_bikes=bikes, duration_s=minutes * 60, seed=seed)).run()
    for _ in run:
        pass
    assert run.truth is not None
    r = run.truth.readings
    keep = (r["flags"] & int(TruthFlag.undeliverable() | TruthFlag.default_excluded())) == 0
    keep &= np.isfinite(r["lat_deg"]) & np.isfinite(r["lon_deg"])
    r = r[keep]
    out = np.zeros(len(r), dtype=ENRICHED_DTYPE)
    for name in ENRICHED_DTYPE.names or ():
        if name in (r.dtype.names or ()):
            out[name] = r[name]
    out["cell"] = [
        h3.latlng_to_cell(a, b, 12)
        for a, b in zip(r["lat_deg"].tolist(), r["lon_deg"].tolist(), strict=True)
    ]
    order = np.lexsort((out["ts_ms"], out["boot_id"], out["kit_id"]))
    k, b, t = out["kit_id"][order], out["boot_id"][order], out["ts_ms"][order]
    new = np.ones(len(out), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1]) | (np.diff(t) > RIDE_GAP_MS)
    firsts = np.flatnonzero(new)
    ids = np.repeat(
        [ride_id_for(int(k[i]), int(b[i]), int(t[i])) for i in firsts],
        np.diff(np.append(firsts, len(out))),
    )
    out["ride_id"][order] = ids
    out["received_ms"] = out["ts_ms"] + 1000
    return out


def counts(
    conn: psycopg.Connection[object],
    metric: Metric,
    res: int,
    window_s: int,
    start: datetime,
    end: datetime,
) -> dict[str, dict[str, int]]:
    world = BBox(-180, -90, 180, 90)
    out = {}
    for name, kw in (
        ("all", {}),
        ("per_metric", {"min_rides": K}),
        ("closed", {"min_rides": K, "unit_resolution": 10, "unit_window_s": 3600}),
    ):
        stats = cell_stats(conn, Selection(metric, res, window_s, start, end, **kw), world)
        out[name] = {"readings": int(stats["n"].sum()), "cells": len(stats)}
    n = column(metric, "n")
    row = conn.execute(
        f"SELECT coalesce(sum(c.{n}), 0), count(DISTINCT c.cell) FROM cell_windows c"
        " JOIN window_rides r USING (resolution, window_s, cell, window_start)"
        f" WHERE c.resolution = %s AND c.window_s = %s AND c.{n} > 0 AND r.rides >= %s"
        " AND c.window_start >= %s AND c.window_start < %s",
        (res, window_s, K, start, end),
    ).fetchone()
    assert row is not None
    out["any_metric"] = {"readings": int(row[0]), "cells": int(row[1])}
    return out


def leaky_parents(
    conn: psycopg.Connection[object], start: datetime, end: datetime
) -> dict[str, dict[str, int]]:
    """Parent-hours whose public figure is more than the merge of its public children."""
    world = BBox(-180, -90, 180, 90)
    rules: dict[str, dict[str, int]] = {
        "per_metric": {"min_rides": K},
        "closed": {"min_rides": K, "unit_resolution": 10, "unit_window_s": 3600},
    }
    out = {name: {"parents": 0, "leaky": 0} for name in rules}
    hour = start
    while hour < end:
        for name, kw in rules.items():

            def public(res: int, kw: dict[str, int] = kw, hour: datetime = hour) -> np.ndarray:
                sel = Selection(Metric.PM25, res, 3600, hour, hour + timedelta(hours=1), **kw)
                return cell_stats(conn, sel, world)

            children = public(10)
            for res in (7, 8, 9):
                parents = public(res)
                of = np.array(
                    [h3.cell_to_parent(int(c), res) for c in children["cell"]], dtype=np.int64
                )
                for cell, n in zip(parents["cell"].tolist(), parents["n"].tolist(), strict=True):
                    out[name]["parents"] += 1
                    out[name]["leaky"] += int(n > children["n"][of == cell].sum())
        hour += timedelta(hours=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bikes", type=int, default=25)
    parser.add_argument("--minutes", type=float, default=240)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    readings = enriched(args.bikes, args.minutes, args.seed)
    t0 = datetime.fromtimestamp(int(readings["ts_ms"].min()) // 86_400_000 * 86_400, UTC)
    start, end = t0 - timedelta(days=1), t0 + timedelta(days=3)
    agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
    results: dict[str, object] = {
        "bikes": args.bikes,
        "minutes": args.minutes,
        "seed": args.seed,
        "k": K,
        "readings": len(readings),
    }
    with database() as url, psycopg.connect(url, autocommit=True) as conn:
        for i in range(0, len(readings), 20_000):
            write_batch(conn, readings[i : i + 20_000], agg)
        table = {}
        for metric in (Metric.PM25, Metric.NO2):
            for window_s in (3600, 86400):
                for res in RESOLUTIONS:
                    c = counts(conn, metric, res, window_s, start, end)
                    table[f"{metric.api_name} res {res} window {window_s} s"] = c
                    total = max(c["all"]["readings"], 1)
                    print(
                        f"{metric.api_name:5} res {res:2} {window_s:6} s  "
                        + "  ".join(
                            f"{name} {v['readings'] / total:6.1%} ({v['cells']} cells)"
                            for name, v in c.items()
                        )
                    )
        results["coverage"] = table
        first = datetime.fromtimestamp(int(readings["ts_ms"].min()) // 3_600_000 * 3600, UTC)
        last = datetime.fromtimestamp(int(readings["ts_ms"].max()) // 1000 + 1, UTC)
        attack = leaky_parents(conn, first, last)
        results["leaky_parents"] = attack
        for name, v in attack.items():
            print(
                f"{name:10} parent-hours (res 7-9) with more than their public children: "
                f"{v['leaky']} of {v['parents']}"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy_coverage.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
