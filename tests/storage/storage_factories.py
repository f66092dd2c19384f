"""Enriched readings for storage tests: plausible rides around Utrecht."""

from __future__ import annotations

import numpy as np
from h3.api import basic_int as h3int

from stream.core.batch import ENRICHED_DTYPE

#: 2026-11-22 08:00:00 UTC
T0_MS = 1_795_334_400_000
FINEST_RES = 12


def make_readings(
    n: int,
    *,
    kit_id: int = 1,
    boot_id: int = 1,
    seq0: int = 0,
    per_frame: int = 10,
    t0_ms: int = T0_MS,
    step_ms: int = 1000,
    ride_id: int = 1,
    lat0: float = 52.09,
    lon0: float = 5.12,
    seed: int = 0,
    received_ms: int | None = None,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    i = np.arange(n)
    out["kit_id"], out["boot_id"] = kit_id, boot_id
    out["seq"] = seq0 + i // per_frame
    out["idx"] = i % per_frame
    out["ts_ms"] = t0_ms + i * step_ms
    out["lat_deg"] = lat0 + i * 2e-5
    out["lon_deg"] = lon0 + i * 3e-5
    out["gnss_fix"] = 2
    out["hdop"] = 0.9
    out["satellites"] = 9
    out["speed_mps"] = 4.0
    out["pm1_ugm3"] = rng.uniform(2, 10, n)
    out["pm25_ugm3"] = rng.uniform(3, 40, n)
    out["pm10_ugm3"] = rng.uniform(5, 60, n)
    out["no2_ugm3"] = np.nan
    out["noise_laeq_db"] = rng.uniform(45, 85, n)
    out["noise_lamax_db"] = out["noise_laeq_db"] + 5
    out["interval_ms"] = step_ms
    out["temperature_c"] = 11.5
    out["humidity_pct"] = 80.0
    out["cell"] = [
        h3int.latlng_to_cell(float(a), float(b), FINEST_RES)
        for a, b in zip(out["lat_deg"], out["lon_deg"], strict=True)
    ]
    out["ride_id"] = ride_id
    out["received_ms"] = received_ms if received_ms is not None else int(t0_ms + n * step_ms)
    return out
