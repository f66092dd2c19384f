"""Heat-map tiles: latency of uncached and revalidated tiles on 30 days of a city's data.

Fills a throwaway PostgreSQL through the storage writer and the stream core's
aggregate with 30 days of a postal fleet riding shared street rounds (readings
every 10 s; the last day is the last one whose rounds are over, so the data set
is the same whatever the time of day), then asks a server in its own process
for every tile covering the town at zooms 12-15, for the public default range
(last 24 h, hourly windows, k-anonymity), for the whole 30 days (daily
windows), and as an officer for both. Each tile is asked for twice: first
plainly (uncached: the API keeps no tile cache, every such request is a fresh
query and render), then again with ``If-None-Match`` and the ETag it got,
which the API answers 304 (what a browser or CDN revalidating sends).

For scale, in the same run: the tile query alone on the database for the
largest tiles (zoom 12 and 13), as ``storage.cell_means.cell_means`` runs it for the
public, for an officer (no k-check: the floor of this design), and the
previous public query, which counted ``window_presence`` rows per request; and
a naive renderer that looks up the H3 cell of each of the 65,536 pixels.

    .venv/bin/python bench/bench_tiles.py [--days 30] [--bikes 30]

Writes bench/results/tiles.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, api_server, database

from api.keys import create_key
from api.privacy import selection
from api.render.tile_png import TileBox, average_edge_m, resolution_for_zoom
from api.roles import Principal, Role
from bikesense.policy import PrivacyPolicy
from bikesense.settings import load_settings
from storage.cell_means import cell_means
from storage.cellwindows import per_metric
from storage.selection import BBox
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.batch import ENRICHED_DTYPE
from stream.core.partials import Metric

LAT0, LON0 = 52.129, 4.656
STEP_S = 10
RIDE_H = 3
GRID_M = 120  # street spacing of the synthetic town
#: Rounds start between 07:00 and 10:00 UTC and last RIDE_H hours.
ROUNDS_OVER_H = 10 + RIDE_H


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


def day_of_readings(
    day_start: datetime, tracks: list[np.ndarray], day_no: int, rng: np.random.Generator
) -> np.ndarray:
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
        r["cell"] = [
            h3i.latlng_to_cell(a, b, 12)
            for a, b in zip(r["lat_deg"].tolist(), r["lon_deg"].tolist(), strict=True)
        ]
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
    # The last day is the last whose rounds are over: the same readings at any hour.
    last_day = today if end >= today + timedelta(hours=ROUNDS_OVER_H) else today - timedelta(1)
    first_day = last_day - timedelta(days=days - 1)
    with psycopg.connect(url, autocommit=True) as conn:
        for d in range(days):
            readings = day_of_readings(first_day + timedelta(days=d), tracks, d, rng)
            for start in range(0, len(readings), 100_000):
                write_batch(conn, readings[start : start + 100_000], agg)
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
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[max(0, int(0.95 * len(ms)) - 1)], 2),
        "max_ms": round(ms[-1], 2),
    }


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


#: The public tile query before ``window_rides`` (storage/tiles.py until migration 0004):
#: distinct rides counted from ``window_presence`` per request. Kept here as the
#: contender the counter replaced.
PREVIOUS_PUBLIC_QUERY = per_metric("""
WITH wanted AS MATERIALIZED (
    SELECT cell FROM h3_cells
    WHERE resolution = %(res)s
      AND lat_deg BETWEEN %(south)s AND %(north)s
      AND lon_deg BETWEEN %(west)s AND %(east)s
),
passing AS MATERIALIZED (
    SELECT pr.cell, pr.window_start
    FROM window_presence pr
    WHERE pr.resolution = %(res)s AND pr.window_s = %(window_s)s
      AND pr.window_start >= %(start)s AND pr.window_start < %(end)s
      AND pr.cell IN (SELECT cell FROM wanted)
    GROUP BY pr.window_start, pr.cell
    HAVING count(*) >= %(k)s
)
SELECT p.cell, sum(p.n), sum(p.sum), sum(p.energy), sum(p.duration_s)
FROM {partials} p JOIN passing USING (cell, window_start)
WHERE p.resolution = %(res)s AND p.window_s = %(window_s)s
  AND p.window_start >= %(start)s AND p.window_start < %(end)s
  AND p.cell IN (SELECT cell FROM wanted)
GROUP BY p.cell
""")


def tile_bbox(t: mercantile.Tile, resolution: int) -> BBox:
    """The bbox the tile route asks for: the tile grown by two cell edges."""
    box = TileBox.of(t.z, t.x, t.y)
    margin = 2 * average_edge_m(resolution) / 111_320
    lon_margin = margin / max(float(np.cos(np.radians(max(abs(box.south), abs(box.north))))), 0.01)
    return BBox(
        box.west - lon_margin, box.south - margin, box.east + lon_margin, box.north + margin
    )


async def query_only_ms(
    url: str, tiles: list[mercantile.Tile], start: datetime, end: datetime, window_s: int
) -> dict[str, dict[str, float]]:
    """The tile query alone, three ways, each tile in turn; best of three per tile."""
    settings = load_settings()
    policy = PrivacyPolicy.from_settings(settings)
    resolutions = settings.aggregation.h3_resolutions
    samples: dict[str, list[float]] = {"public": [], "officer": [], "previous_public": []}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SET jit = off")  # as the API's pool does
        for t in tiles:
            box = TileBox.of(t.z, t.x, t.y)
            res = resolution_for_zoom(t.z, (box.south + box.north) / 2, resolutions)
            bbox = tile_bbox(t, res)
            for name, values in samples.items():
                role = Role.OFFICER if name == "officer" else Role.PUBLIC
                sel = selection(
                    Principal(role),
                    policy,
                    metric=Metric.PM25,
                    resolution=res,
                    window_s=window_s,
                    start=start,
                    end=end,
                )
                best = float("inf")
                for _ in range(3):
                    started = time.perf_counter()
                    if name == "previous_public":
                        params = sel.params() | {
                            "west": bbox.west,
                            "south": bbox.south,
                            "east": bbox.east,
                            "north": bbox.north,
                        }
                        query = PREVIOUS_PUBLIC_QUERY[Metric.PM25]
                        cur = await conn.execute(query, params, prepare=False)
                        await cur.fetchall()
                    else:
                        await cell_means(conn, sel, bbox)
                    best = min(best, time.perf_counter() - started)
                values.append(best)
    return {name: percentiles(values) for name, values in samples.items()}


def timed_get(
    client: httpx.Client, path: str, params: dict[str, str], headers: dict[str, str]
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path, params=params, headers=headers)
    return time.perf_counter() - started, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--bikes", type=int, default=30)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, object] = {
        "days": args.days,
        "bikes": args.bikes,
        "machine": platform.platform(),
        "when": now.isoformat(),
    }
    with database() as url:
        started = time.perf_counter()
        results["readings"] = fill(url, args.days, args.bikes, now)
        results["fill_s"] = round(time.perf_counter() - started, 1)
        with psycopg.connect(url, autocommit=True) as conn:
            key = create_key(conn, Role.OFFICER, "bench").token
            for table in (
                "readings",
                "cell_windows",
                "window_partials",
                "window_presence",
                "window_rides",
            ):
                count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                row = conn.execute(count).fetchone()
                results[f"rows_{table}"] = row[0] if row else 0
        month = {"from": (now - timedelta(days=args.days)).isoformat(), "to": now.isoformat()}
        # The map's "7 days": hourly windows chosen, read as days with hours at the ends.
        week = {"from": (now - timedelta(days=7)).isoformat(), "to": now.isoformat()}
        officer = {"X-API-Key": key}
        cases = {
            "public_last_24h": ({}, {}),
            "public_7_days": (week, {}),
            "public_30_days": (month, {}),
            "officer_last_24h": ({}, officer),
            "officer_7_days": (week, officer),
            "officer_30_days": (month, officer),
        }
        results["load_average_before"] = list(os.getloadavg())
        with api_server(url) as (base, _pid), httpx.Client(base_url=base, timeout=60) as client:
            for t in town_tiles(13)[:3]:  # warm the connection pool and imports
                client.get(f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png")
            for name, (params, headers) in cases.items():
                uncached: dict[str, list[float]] = {}
                revalidated: dict[str, list[float]] = {}
                drawn = 0
                for z in (12, 13, 14, 15):
                    for t in town_tiles(z):
                        path = f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png"
                        took, response = timed_get(client, path, params, headers)
                        response.raise_for_status()
                        uncached.setdefault(str(z), []).append(took)
                        drawn += len(response.content) > 200
                        again = headers | {"If-None-Match": response.headers["ETag"]}
                        took, response = timed_get(client, path, params, again)
                        if response.status_code != 304:
                            raise RuntimeError(
                                f"{path}: a repeat with its ETag got "
                                f"{response.status_code}, not 304"
                            )
                        revalidated.setdefault(str(z), []).append(took)
                results[name] = {
                    "all": percentiles([s for v in uncached.values() for s in v]),
                    "by_zoom": {z: percentiles(v) for z, v in uncached.items()},
                    "revalidated_304": {
                        "all": percentiles([s for v in revalidated.values() for s in v]),
                        "by_zoom": {z: percentiles(v) for z, v in revalidated.items()},
                    },
                    "tiles_with_colour": drawn,
                }
                first, repeat = results[name]["all"], results[name]["revalidated_304"]["all"]  # type: ignore[index]
                print(
                    f"{name:17s} uncached p50 {first['p50_ms']:6.1f} ms p95 "
                    f"{first['p95_ms']:6.1f} ms | 304 p50 {repeat['p50_ms']:6.1f} ms p95 "
                    f"{repeat['p95_ms']:6.1f} ms ({first['n']} tiles, {drawn} with colour)"
                )
        results["load_average_after"] = list(os.getloadavg())
        largest = town_tiles(12) + town_tiles(13)
        results["query_only_largest_tiles"] = {
            "tiles": "zoom 12 and 13, best of 3 per tile",
            "last_24h": asyncio.run(
                query_only_ms(url, largest, now - timedelta(hours=24), now, 3600)
            ),
            "30_days": asyncio.run(
                query_only_ms(url, largest, now - timedelta(days=args.days), now, 86_400)
            ),
        }
        for span in ("last_24h", "30_days"):
            q = results["query_only_largest_tiles"][span]  # type: ignore[index]
            print(
                f"query alone, largest tiles, {span:8s}: "
                + ", ".join(f"{k} p50 {v['p50_ms']} / p95 {v['p95_ms']} ms" for k, v in q.items())
            )
        naive = percentiles([naive_render_s(t, 10, {}) for t in town_tiles(13)[:3]])
        results["naive_per_pixel_render"] = naive
        print(f"naive per-pixel renderer: p50 {naive['p50_ms']} ms per tile")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tiles.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
