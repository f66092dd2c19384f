"""A small fleet with known sensor errors beside one reference station, written through storage.

Three kits, each with its own PM2.5 gain and offset, stand a few minutes an hour at a
background station (pairs) and then ride to PLACE, a kilometre away, where all three
pass every hour (a public unit: three rides). The station reports the true hourly
PM2.5; at PLACE the truth is ``place_truth(hour)``. Two UTC days, 08:00–20:00.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import partial

import numpy as np
import psycopg
from h3.api import basic_int as h3int

from storage.reference import store_reference
from storage.reference_formats import parse_reference
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from tests.api.api_factories import RESOLUTIONS, WINDOWS, ride

DAY0 = date(2026, 11, 21)
DAYS = (DAY0, date(2026, 11, 22))
DAY0_MS = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
HOURS = range(8, 20)
STATION = (52.1290, 4.6560)
PLACE = (52.1380, 4.6560)  # 1 km north
STATION_ID = "NL99001"
#: kit -> (gain, offset): what calibration must recover.
KITS = {11: (1.30, 2.0), 12: (0.85, -1.0), 13: (1.10, 4.0)}
PLACE_CELL = h3int.latlng_to_cell(*PLACE, 10)


def station_truth(day: int, hour: int) -> float:
    """The station's hourly PM2.5: a wide spread, so gain and offset separate."""
    return 6.0 + 4.0 * day + 1.5 * (hour - 8) + 3.0 * float(np.sin(hour))


def place_truth(day: int, hour: int) -> float:
    return 1.4 * station_truth(day, hour) + 2.0


def readings() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = []
    ride_id = 1000
    for d in range(len(DAYS)):
        for hour in HOURS:
            t0 = DAY0_MS + d * 86_400_000 + hour * HOUR_MS
            for i, (kit, (gain, offset)) in enumerate(KITS.items()):
                seq0 = (d * 100 + hour) * 20
                at_station = ride(
                    kit_id=kit,
                    ride_id=ride_id,
                    start=STATION,
                    n=6,
                    t0_ms=t0 + i * 60_000,
                    step_ms=10_000,
                    seed=ride_id,
                    seq0=seq0,
                )
                true = station_truth(d, hour)
                at_station["pm25_ugm3"] = np.round(
                    offset + gain * true + rng.normal(0, 0.1, len(at_station)), 1
                )
                at_place = ride(
                    kit_id=kit,
                    ride_id=ride_id + 1,
                    start=PLACE,
                    n=30,
                    t0_ms=t0 + 1_200_000 + i * 60_000,
                    step_ms=10_000,
                    seed=ride_id + 1,
                    seq0=seq0 + 5,
                )
                true_p = place_truth(d, hour)
                at_place["pm25_ugm3"] = np.round(
                    offset + gain * true_p + rng.normal(0, 0.3, len(at_place)), 1
                )
                out += [at_station, at_place]
                ride_id += 2
    return out


def reference_csv(scale_day1: float = 1.0) -> bytes:
    lines = ["station_id,station_name,lat_deg,lon_deg,metric,hour_start,value_ugm3,valid"]
    for d, day in enumerate(DAYS):
        for hour in HOURS:
            value = station_truth(d, hour) * (scale_day1 if d == 1 else 1.0)
            lines.append(
                f"{STATION_ID},Teststad-Park,{STATION[0]},{STATION[1]},pm25,"
                f"{day.isoformat()}T{hour:02d}:00:00Z,{value:.3f},true"
            )
    return ("\n".join(lines) + "\n").encode()


def write_all(url: str) -> None:
    agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
    with psycopg.connect(url, autocommit=True) as conn:
        for batch in readings():
            write_batch(conn, batch, agg)
        store_reference(conn, parse_reference(reference_csv()))
