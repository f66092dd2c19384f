"""Readings for the stream-core tests: bikes riding around Amsterdam."""

from __future__ import annotations

import numpy as np
from h3.api import basic_int as h3int

from firmware_protocol.readings import READING_DTYPE, empty_readings
from stream.core.batch import ENRICHED_DTYPE
from stream.core.qa import QaFlag
from stream.core.rides import ride_id_for

#: 2026-06-15 08:00:00 UTC, a Monday (10:00 in Amsterdam).
T0_MS = 1_781_510_400_000
FINEST_RES = 10
AMSTERDAM = (52.370, 4.895)


def riding(
    n: int,
    *,
    kit_id: int = 7,
    boot_id: int = 1,
    t0_ms: int = T0_MS,
    step_ms: int = 1000,
    per_frame: int = 10,
    seq0: int = 0,
    speed_mps: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """``n`` clean decoded readings (``READING_DTYPE``) of one kit riding east at ``speed_mps``."""
    rng = np.random.default_rng(seed)
    out = empty_readings(n)
    i = np.arange(n)
    out["kit_id"], out["boot_id"] = kit_id, boot_id
    out["seq"] = seq0 + i // per_frame
    out["idx"] = i % per_frame
    out["ts_ms"] = t0_ms + i * step_ms
    metres = speed_mps * step_ms / 1000 * i
    out["lat_deg"] = AMSTERDAM[0]
    out["lon_deg"] = AMSTERDAM[1] + metres / (111_320 * np.cos(np.radians(AMSTERDAM[0])))
    out["gnss_fix"] = 2
    out["hdop"] = 0.9
    out["satellites"] = 9
    out["speed_mps"] = speed_mps
    out["pm1_ugm3"] = rng.uniform(2, 6, n).round(1)
    out["pm25_ugm3"] = out["pm1_ugm3"] + rng.uniform(1, 10, n).round(1)
    out["pm10_ugm3"] = out["pm25_ugm3"] + rng.uniform(1, 10, n).round(1)
    out["no2_ugm3"] = rng.uniform(10, 60, n).round(1)
    out["noise_laeq_db"] = rng.uniform(50, 80, n).round(1)
    out["noise_lamax_db"] = out["noise_laeq_db"] + rng.uniform(0, 6, n).round(1)
    out["interval_ms"] = step_ms
    out["temperature_c"] = 18.0
    out["humidity_pct"] = 60.0
    assert out.dtype == READING_DTYPE
    return out


def random_enriched(seed: int, n: int) -> np.ndarray:
    """Enriched rows with everything varied: a few kits and rides, cells close together,
    three days, absent values, flags, zero intervals. QA not run: flags are random."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    out["kit_id"] = rng.integers(1, 4, n)
    out["boot_id"] = 1
    out["seq"] = np.arange(n)
    out["ts_ms"] = T0_MS + rng.integers(-3 * 86_400_000, 3 * 86_400_000, n)
    out["lat_deg"] = AMSTERDAM[0] + rng.normal(0, 0.02, n)
    out["lon_deg"] = AMSTERDAM[1] + rng.normal(0, 0.03, n)
    out["gnss_fix"] = 2
    out["interval_ms"] = rng.choice([0, 1000, 1000, 2000, 10_000], n)
    for col, (lo, hi) in {
        "pm1_ugm3": (-5, 50),
        "pm25_ugm3": (0, 200),
        "pm10_ugm3": (0, 1500),
        "no2_ugm3": (-30, 300),
        "noise_laeq_db": (20, 135),
        "noise_lamax_db": (30, 140),
        "temperature_c": (-35, 55),
        "humidity_pct": (0, 100),
    }.items():
        values = rng.uniform(lo, hi, n).round(1)
        out[col] = np.where(rng.random(n) < 0.15, np.nan, values)
    flags = np.array(
        [
            0,
            0,
            0,
            0,
            QaFlag.HUMID_PM,
            QaFlag.NO_FIX,
            QaFlag.NOISE_STUCK,
            QaFlag.LOW_BATTERY,
            QaFlag.POSITION_JUMP | QaFlag.PM_FAULT,
        ],
        dtype=np.uint32,
    )
    out["qa_flags"] = rng.choice(flags, n)
    out["cell"] = [
        h3int.latlng_to_cell(a, b, FINEST_RES)
        for a, b in zip(out["lat_deg"].tolist(), out["lon_deg"].tolist(), strict=True)
    ]
    starts = [T0_MS - 86_400_000 + k * 3_600_000 * 7 for k in range(5)]
    rides = np.array([ride_id_for(k, 1, s) for k in (1, 2, 3) for s in starts], dtype=np.int64)
    out["ride_id"] = rng.choice(rides, n)
    out["received_ms"] = T0_MS + 4 * 86_400_000
    return out
