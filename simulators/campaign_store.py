"""A simulated calibration campaign stored as the pipeline stores one: the kits' readings
through the stream core and the batch writer, a day per batch, and the reference
stations' hours imported as the CSV an operator would load, with their kinds.

Shared by tests/storage/test_calibration_simulated.py and
bench/bench_corrected_storage.py, so the test and the benchmark measure the same data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import psycopg

from firmware_protocol.readings import READING_DTYPE
from simulators.reference import Campaign
from storage.reference import set_station_kind, store_reference
from storage.reference_formats import parse_reference
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitState

DAY_MS = 86_400_000


def campaign_readings(truth: np.ndarray) -> np.ndarray:
    """The campaign's readings as the kits sent them (``READING_DTYPE``)."""
    out = np.zeros(len(truth), READING_DTYPE)
    for name in READING_DTYPE.names or ():
        if name in (truth.dtype.names or ()):
            out[name] = truth[name]
    out["gnss_fix"] = 2
    out["hdop"] = 0.9
    out["satellites"] = 9
    out["speed_mps"] = np.nan
    out["noise_lamax_db"] = truth["noise_laeq_db"] + 5.0
    return out


def reference_csv(c: Campaign) -> bytes:
    """The stations' hours in the CSV format ``bikesense reference import`` reads."""
    names = {"pm25_ugm3": "pm25", "pm10_ugm3": "pm10", "no2_ugm3": "no2"}
    where = {s.station_id: s for s in c.stations}
    lines = ["station_id,station_name,lat_deg,lon_deg,metric,hour_start,value_ugm3,valid"]
    for r in c.reference.tolist():
        sid, metric, hour_ms, value, valid = r
        s = where[sid]
        hour = datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(
            f"{sid},{sid},{s.lat_deg:.7f},{s.lon_deg:.7f},{names.get(metric, metric)},"
            f"{hour},{value:.4f},{'true' if valid else 'false'}"
        )
    return ("\n".join(lines) + "\n").encode()


def store_campaign(
    conn: psycopg.Connection[Any],
    campaign: Campaign,
    resolutions: tuple[int, ...],
    windows_s: tuple[int, ...],
) -> None:
    """Store ``campaign`` on an autocommit connection: its readings a UTC day per batch
    (received a minute after the day's last), its stations' hours and kinds."""
    config = CoreConfig(resolutions=resolutions, window_sizes_s=windows_s)
    agg = partial(aggregate, resolutions=resolutions, window_sizes_s=windows_s)
    readings = campaign_readings(campaign.readings)
    readings = readings[np.argsort(readings["ts_ms"], kind="stable")]
    states: dict[int, KitState] = {}
    day = readings["ts_ms"] // DAY_MS
    for d in np.unique(day).tolist():
        chunk = readings[day == d]
        received = int(chunk["ts_ms"].max()) + 60_000
        processed = process_batch(chunk, received, states, config)
        states = dict(processed.states)
        rows = processed.to_store()
        rows["received_ms"] = received
        write_batch(conn, rows, agg)
    store_reference(conn, parse_reference(reference_csv(campaign)))
    for s in campaign.stations:
        set_station_kind(conn, s.station_id, s.kind)
