"""Mergeable partial aggregates: the contract between the stream core and storage.

A partial summarises the readings of one (metric, H3 resolution, cell, window
size, window start). Partials for the same key merge by adding counts, sums,
energies and histograms and taking min / max, in any order and any grouping
(DESIGN.md decision 1). Storage keeps exactly these columns.

Distinct rides and days cannot be summed, so they travel separately as
presence rows (one per ride seen in a cell-window); storage keeps them unique
and counts them.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Metric(IntEnum):
    """Metrics aggregated into windows; the API names are :attr:`api_name`."""

    PM1 = 1
    PM25 = 2
    PM10 = 3
    NO2 = 4
    NOISE = 5
    TEMPERATURE = 6
    HUMIDITY = 7

    @property
    def api_name(self) -> str:
        return self.name.lower()

    @classmethod
    def from_api_name(cls, name: str) -> Metric:
        try:
            return cls[name.upper()]
        except KeyError:
            known = ", ".join(m.api_name for m in cls)
            msg = f"unknown metric {name!r}; known metrics: {known}"
            raise ValueError(msg) from None


#: The reading column each metric is taken from.
METRIC_COLUMNS: dict[Metric, str] = {
    Metric.PM1: "pm1_ugm3",
    Metric.PM25: "pm25_ugm3",
    Metric.PM10: "pm10_ugm3",
    Metric.NO2: "no2_ugm3",
    Metric.NOISE: "noise_laeq_db",
    Metric.TEMPERATURE: "temperature_c",
    Metric.HUMIDITY: "humidity_pct",
}

#: Number of fixed histogram bins kept per partial (percentiles come from these).
HIST_BINS = 32

#: The key that identifies a partial; unique in storage.
PARTIAL_KEY_FIELDS = ("metric", "resolution", "cell", "window_s", "window_start_ms")

PARTIAL_DTYPE = np.dtype(
    [
        ("metric", "u1"),  # Metric value
        ("resolution", "u1"),  # H3 resolution of ``cell``
        ("cell", "<i8"),  # H3 index as int (fits in 63 bits)
        ("window_s", "<u4"),  # window length in seconds
        ("window_start_ms", "<i8"),  # window start, Unix epoch ms UTC, aligned to window_s
        ("n", "<i8"),  # readings counted
        ("sum", "<f8"),  # Σ x
        ("sumsq", "<f8"),  # Σ x²
        ("min", "<f8"),
        ("max", "<f8"),
        # Noise only (0 / NaN for other metrics): DESIGN.md decision 3.
        ("energy", "<f8"),  # Σ tᵢ·10^(Lᵢ/10) with tᵢ the interval in seconds
        ("duration_s", "<f8"),  # Σ tᵢ
        ("lamax_db", "<f8"),  # max of LAmax (NaN when no noise reading)
        ("hist", "<i4", (HIST_BINS,)),  # counts per fixed bin, see stream.core.aggregate
    ]
)

#: One row per (cell-window, ride): distinct rides and days are counted from these.
PRESENCE_DTYPE = np.dtype(
    [
        ("resolution", "u1"),
        ("cell", "<i8"),
        ("window_s", "<u4"),
        ("window_start_ms", "<i8"),
        ("ride_id", "<i8"),
        ("day", "<i4"),  # day of the ride, days since 1970-01-01 in the deployment's time zone
    ]
)
