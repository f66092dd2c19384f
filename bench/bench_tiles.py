"""Heat-map tiles: latency of uncached tiles on 30 days of a city's data.

Fills a throwaway PostgreSQL through the storage writer and the stream core's
aggregate with 30 days of a postal fleet riding shared street rounds (readings
every 10 s), then asks a server in its own process for every tile covering
the town at zooms 12-15, for the public default range (last 24 h, hourly
windows, k-anonymity) and for the whole 30 days (daily windows), and as an
officer. Nothing is cached server-side; every request is a fresh render.

For scale, in the same run: the tile query alone on the database (the
ceiling of this design) and a naive renderer that looks up the H3 cell of
each of the 65,536 pixels.

    .venv/bin/python bench/bench_tiles.py [--days 30] [--bikes 30]

Writes bench/results/tiles.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import h3.api.basic_int as h3i
import httpx
import mercantile
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, api_server, database

from api.aggregates import selection
from api.config import ApiSettings
from api.keys import create_key
from api.roles import Principal, Role
from api.tiles import TileBox
from storage.queries import BBox
from storage.tiles import cell_means
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.batch import ENRICHED_DTYPE
from stream.core.partials import Metric

LAT0, LON0 = 52.129, 4.656
STEP_S = 10
RIDE_H = 3
GRID_M = 120  # street spacing of the synthetic town


def rounds(bikes: int, seed: int = 3) -> list[np.ndarray]:
    """One round per bike: a walk along a shared street grid, 3 h at about 4 m/s."""
    rng = np.random.default_rng(seed)
    n = RIDE_H * 3600 // STEP_S
    out = []
    for _ in range(bikes):
        xy = np.zeros((n, 2))
        pos = rng.integers(-20, 20, 2).astype(float) * GRID_M
        direction = rng.integers(0, 4)
        for i in range(n):
            if i % 3 == 0 and rng.random() < 0.3:
                direction = rng.integers(0, 4)
            step = ((40, 0), (-40, 0), (0, 40), (0, -40))[direction]
            pos = np.clip(pos + step, -2600, 2600)
            xy[i] = pos
        lat = LAT0 + xy[:, 1] / 111_320
        lon = LON0 + xy[:, 0] / (111_320 * np.cos(np.radians(LAT0)))
        out.append(np.column_stack((lat, lon)))
    return out


def day_of_readings(day_start: datetime, tracks: list[np.ndarray], day_no: int,
                    rng: np.random.Generator) -> np.ndarray:
    parts = []
    for bike, track in enumerate(tracks):
        n = len(track)
        r = np.zeros(n, dtype=ENRICHED_DTYPE)
        # Rounds start between 07:00 and 10:00 UTC, a quarter of the fleet per hour.
        start_ms = int((day_start + timedelta(hours=7 + bike % 4)).timestamp() * 1000)
        i = np.arange(n)
        r["kit_id"] = bike + 1
        r["boot_id"] = day_no + 1
        r["seq"] = i // 10
        r["idx"] = i % 10
        r["ts_ms"] = start_ms + i * STEP_S * 1000
        r["lat_deg"] = track[:, 0] + rng.normal(0, 1e-5, n)
        r["lon_deg"] = track[:, 1] + rng.normal(0, 1e-5, n)
        r["gnss_fix"] = 2
        r["hdop"] = 0.9
        r["satellites"] = 9
        r["speed_mps"] = 4.0
        base = 6 + 10 * np.sin(np.linspace(0, 6, n)) ** 2
        r["pm1_ugm3"] = base * 0.6
        r["pm25_ugm3"] = base + rng.gamma(1, 2, n)
        r["pm10_ugm3"] = base * 1.6
        r["no2_ugm3"] = 15 + rng.gamma(2, 6, n)
        r["noise_laeq_db"] = rng.normal(63, 5, n)
        r["noise_lamax_db"] = r["noise_laeq_db"] + 6
        r["interval_ms"] = STEP_S * 1000
        r["temperature_c"] = 10.0
        r["humidity_pct"] = 65.0
        r["cell"] = [h3i.latlng_to_cell(a, b, 12)
                     for a, b in zip(r["lat_deg"].tolist(), r["lon_deg"].tolist(), strict=True)]
        r["ride_id"] = (day_no + 1) * 1000 + bike
        r["received_ms"] = r["ts_ms"] + 1500
        parts.append(r)
    return np.concatenate(parts)


def fill(url: str, days: int, bikes: int, end: datetime) -> int:
    tracks = rounds(bikes)
    rng = np.random.default_rng(7)
    agg = partial(aggregate, resolutions=(7, 8, 9, 10), window_sizes_s=(60, 900, 3600, 86400))
    total = 0
    today = end.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=days - 1)
    with psycopg.connect(url, autocommit=True) as conn:
        for d in range(days):
            readings = day_of_readings(first_day + timedelta(days=d), tracks, d, rng)
            # Today's rounds end at most now: the last day is the default 24 h range.
            readings = readings[readings["ts_ms"] < end.timestamp() * 1000]
            for start in range(0, len(readings), 100_000):
                write_batch(conn, readings[start:start + 100_000], agg)
            total += len(readings)
            print(f"\rday {d + 1}/{days}: {total:,} readings", end="", flush=True)
        conn.execute("VACUUM ANALYZE")
    print()
    return total


def town_tiles(z: int) -> list[mercantile.Tile]:
    west, east = LON0 - 0.04, LON0 + 0.04
    south, north = LAT0 - 0.024, LAT0 + 0.024
    return list(mercantile.tiles(west, south, east, north, zooms=[z]))


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[max(0, int(0.95 * len(ms)) - 1)], 2),
            "max_ms": round(ms[-1], 2)}


def naive_render_s(tile: mercantile.Tile, resolution: int, values: dict[int, int]) -> float:
    """The obvious renderer: the H3 cell of every pixel centre, looked up one by one."""
    started = time.perf_counter()
    b = mercantile.xy_bounds(tile)
    xs = b.left + (np.arange(256) + 0.5) / 256 * (b.right - b.left)
    ys = b.top - (np.arange(256) + 0.5) / 256 * (b.top - b.bottom)
    out = np.zeros((256, 256), dtype=np.uint8)
    for j, y in enumerate(ys.tolist()):
        for i, x in enumerate(xs.tolist()):
            lon, lat = mercantile.lnglat(x, y)
            out[j, i] = values.get(h3i.latlng_to_cell(lat, lon, resolution), 0)
    return time.perf_counter() - started


async def query_only_s(url: str, tiles: list[mercantile.Tile], start: datetime,
                       end: datetime, window_s: int) -> list[float]:
    api = ApiSettings()
    out = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for t in tiles:
            box = TileBox.of(t.z, t.x, t.y)
            sel = selection(Principal(Role.PUBLIC), api, metric=Metric.PM25, resolution=10,
                            window_s=window_s, start=start, end=end)
            started = time.perf_counter()
            await cell_means(conn, sel, BBox(box.west - 0.003, box.south - 0.002,
                                             box.east + 0.003, box.north + 0.002))
            out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--bikes", type=int, default=30)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, object] = {"days": args.days, "bikes": args.bikes,
                                  "machine": platform.platform(),
                                  "when": now.isoformat()}
    with database() as url:
        started = time.perf_counter()
        results["readings"] = fill(url, args.days, args.bikes, now)
        results["fill_s"] = round(time.perf_counter() - started, 1)
        with psycopg.connect(url, autocommit=True) as conn:
            key = create_key(conn, Role.OFFICER, "bench").token
            for table in ("readings", "window_partials", "window_presence"):
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
                results[f"rows_{table}"] = row[0] if row else 0
        month = {"from": (now - timedelta(days=args.days)).isoformat(), "to": now.isoformat()}
        cases = {"public_last_24h": ({}, {}), "public_30_days": (month, {}),
                 "officer_last_24h": ({}, {"X-API-Key": key})}
        with api_server(url) as (base, _pid), httpx.Client(base_url=base, timeout=60) as client:
            for t in town_tiles(13)[:3]:  # warm the connection pool and imports
                client.get(f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png")
            for name, (params, headers) in cases.items():
                by_zoom: dict[str, object] = {}
                everything: list[float] = []
                drawn = 0
                for z in (12, 13, 14, 15):
                    samples = []
                    for t in town_tiles(z):
                        started = time.perf_counter()
                        response = client.get(f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png",
                                              params=params, headers=headers)
                        samples.append(time.perf_counter() - started)
                        response.raise_for_status()
                        drawn += len(response.content) > 200
                    by_zoom[str(z)] = percentiles(samples)
                    everything += samples
                results[name] = {"all": percentiles(everything), "by_zoom": by_zoom,
                                 "tiles_with_colour": drawn}
                print(f"{name:18s} p50 {results[name]['all']['p50_ms']:6.1f} ms  "  # type: ignore[index]
                      f"p95 {results[name]['all']['p95_ms']:6.1f} ms  "  # type: ignore[index]
                      f"({len(everything)} tiles, {drawn} with colour)")
        z13 = town_tiles(13)
        q24 = asyncio.run(query_only_s(url, z13, now - timedelta(hours=24), now, 3600))
        results["query_only_public_24h_z13"] = percentiles(q24)
        naive = [naive_render_s(t, 10, {}) for t in z13[:3]]
        results["naive_per_pixel_render"] = percentiles(naive)
        print(f"tile query alone (z13, 24 h): p95 {results['query_only_public_24h_z13']['p95_ms']}"  # type: ignore[index]
              f" ms; naive per-pixel renderer: p50 "
              f"{results['naive_per_pixel_render']['p50_ms']} ms per tile")  # type: ignore[index]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tiles.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
