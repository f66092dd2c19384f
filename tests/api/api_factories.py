"""Readings for API tests: rides along streets of Alphen aan den Rijn, written through storage."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.batch import ENRICHED_DTYPE

#: 2026-11-21 08:00 UTC: a fixed morning, so tests never depend on the clock.
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
#: The API's "now" in the tests (``api.deps.get_now``, see conftest.py): two days after
#: the scenario's morning, so its day is over and more than a day old, on any calendar day.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
FINEST_RES = 12
RESOLUTIONS = (7, 8, 9, 10)
WINDOWS = (60, 900, 3600, 86400)

#: Three places, a few hundred metres apart, with different traffic.
BUSY = (52.1290, 4.6560)  # 4 rides: public
QUIET = (52.1390, 4.6760)  # 2 rides: officers only
SPARSE = (52.1190, 4.6360)  # 3 rides but 3 readings each: insufficient


def ride(
    *,
    kit_id: int,
    ride_id: int,
    start: tuple[float, float],
    n: int,
    t0_ms: int = T0_MS,
    pm25: float = 8.0,
    noise_db: float = 60.0,
    step_ms: int = 1000,
    seed: int = 0,
    boot_id: int = 1,
    seq0: int = 0,
) -> np.ndarray:
    """A bike standing almost still (a few metres) for ``n`` one-second readings."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    i = np.arange(n)
    out["kit_id"], out["boot_id"] = kit_id, boot_id
    out["seq"] = seq0 + i // 10
    out["idx"] = i % 10
    out["ts_ms"] = t0_ms + i * step_ms
    out["lat_deg"] = start[0] + rng.normal(0, 2e-5, n)
    out["lon_deg"] = start[1] + rng.normal(0, 2e-5, n)
    out["gnss_fix"] = 2
    out["hdop"] = 0.9
    out["satellites"] = 9
    out["speed_mps"] = 1.0
    out["pm1_ugm3"] = pm25 * 0.6
    out["pm25_ugm3"] = pm25 + rng.normal(0, 0.5, n)
    out["pm10_ugm3"] = pm25 * 1.5
    out["no2_ugm3"] = 20.0
    out["noise_laeq_db"] = noise_db
    out["noise_lamax_db"] = noise_db + 6
    out["interval_ms"] = step_ms
    out["temperature_c"] = 11.0
    out["humidity_pct"] = 60.0
    out["cell"] = [
        h3int.latlng_to_cell(float(a), float(b), FINEST_RES)
        for a, b in zip(out["lat_deg"], out["lon_deg"], strict=True)
    ]
    out["ride_id"] = ride_id
    out["received_ms"] = t0_ms + n * step_ms + 5000
    return out


def scenario() -> list[np.ndarray]:
    """BUSY: 4 rides × 120 readings at PM2.5 ≈ 8; QUIET: 2 rides at ≈ 30; SPARSE: 3 × 3."""
    rides = [
        ride(
            kit_id=k,
            ride_id=100 + k,
            start=BUSY,
            n=120,
            seed=k,
            t0_ms=T0_MS + k * 300_000,
            noise_db=60.0 + 20 * (k % 2),
        )
        for k in range(1, 5)
    ]
    rides += [
        ride(
            kit_id=k,
            ride_id=200 + k,
            start=QUIET,
            n=120,
            pm25=30.0,
            seed=k,
            t0_ms=T0_MS + k * 60_000,
            boot_id=2,
        )
        for k in range(5, 7)
    ]
    rides += [
        ride(
            kit_id=k,
            ride_id=300 + k,
            start=SPARSE,
            n=3,
            seed=k,
            boot_id=3,
            t0_ms=T0_MS + k * 60_000,
        )
        for k in range(7, 10)
    ]
    return rides


def write(url: str, batches: list[np.ndarray]) -> None:
    agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
    with psycopg.connect(url, autocommit=True) as conn:
        for batch in batches:
            write_batch(conn, batch, agg)


def h3_hex(lat_lon: tuple[float, float], res: int) -> str:
    return format(h3int.latlng_to_cell(lat_lon[0], lat_lon[1], res), "x")


def day_range() -> dict[str, Any]:
    return {"from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
