"""Mergeable partial aggregates: the contract between the stream core and storage.

A partial summarises the readings of one (metric, H3 resolution, cell, window
size, window start). Partials for the same key merge by adding counts, sums,
energies and histograms and taking min / max, in any order and any grouping
(docs/design.md decision 1). Storage keeps exactly these fields, every metric's
partial of a cell-window side by side in one row (storage/cellwindows.py).

Distinct rides and days cannot be summed, so they travel separately as
presence rows (one per ride seen in a cell-window); storage keeps them unique
by key and counts them. A presence row also carries how much of the cell-window
the ride supplied (its readings, and for noise its sound energy): those add when
rows of one key merge, and give each ride's share of a mean for the interval's
effective number of rides (api/stats.py, docs/statistics.md).
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
        # Noise only (0 / NaN for other metrics): docs/design.md decision 3.
        ("energy", "<f8"),  # Σ tᵢ·10^(Lᵢ/10) with tᵢ the interval in seconds
        ("duration_s", "<f8"),  # Σ tᵢ
        ("lamax_db", "<f8"),  # max of LAmax (NaN when no noise reading)
        ("hist", "<i4", (HIST_BINS,)),  # counts per fixed bin, see stream.core.aggregate
    ]
)

#: One row per (cell-window, ride): distinct rides and days are counted from these,
#: per metric too: ``metrics`` holds the bit :func:`metric_bit` of every metric the
#: ride measured there (a metric's k-anonymity threshold counts only those rides).
#: Rows of one key (:data:`PRESENCE_KEY_FIELDS`) merge: ``metrics`` ORs, ``readings``
#: and ``noise_energy`` add (stream.core.merge.merge_presence).
PRESENCE_DTYPE = np.dtype(
    [
        ("resolution", "u1"),
        ("cell", "<i8"),
        ("window_s", "<u4"),
        ("window_start_ms", "<i8"),
        ("ride_id", "<i8"),
        ("day", "<i4"),  # day of the ride, days since 1970-01-01 in the deployment's time zone
        ("metrics", "<i2"),  # bit set of the metrics the ride measured in the cell-window
        # The ride's share of the cell-window (Kish's effective number of rides, api/stats.py):
        ("readings", "<i4"),  # its readings there that count for at least one metric
        ("noise_energy", "<f8"),  # Σ tᵢ·10^(Lᵢ/10) of its noise readings there (0 without)
    ]
)

#: The fields that identify a presence row; unique in storage.
PRESENCE_KEY_FIELDS = ("resolution", "cell", "window_s", "window_start_ms", "ride_id", "day")


def metric_bit(metric: Metric) -> int:
    """The bit of ``metric`` in a presence row's ``metrics`` (bit ``int(metric)``, so
    that SQL tests it as ``metrics >> metric & 1``)."""
    return 1 << int(metric)


#: Every metric's bit: what presence rows stored before metrics were counted hold.
ALL_METRIC_BITS = sum(metric_bit(m) for m in Metric)


def _edges(values: list[float]) -> np.ndarray:
    edges = np.asarray(values, dtype=np.float64)
    if len(edges) != HIST_BINS + 1 or not np.all(np.diff(edges) > 0):
        msg = f"histogram edges must be {HIST_BINS + 1} increasing values"
        raise ValueError(msg)
    edges.setflags(write=False)
    return edges


#: Histogram bin edges per metric: bin i holds edges[i] <= x < edges[i + 1]; values
#: below the first edge count in bin 0 and values at or above the last in the last bin,
#: so no reading is ever lost from a histogram. Percentiles interpolate inside a bin
#: and are clipped to the partial's own min / max, so the open ends stay honest.
#: Edges are part of the storage contract: changing them makes old histograms
#: unmergeable with new ones, so treat a change as a schema migration.
HIST_EDGES: dict[Metric, np.ndarray] = {
    # PM, µg/m³. 1 µg/m³ steps up to 10 where clean-city air and the WHO 2021
    # guideline values (PM2.5 5 annual / 15 daily; PM10 15 / 45) lie, coarser above;
    # the top edge is the SPS30 / PMS5003 measurement range (0–1000 µg/m³,
    # Sensirion SPS30 datasheet; Plantower PMS5003 manual, "maximum range").
    **{
        metric: _edges(
            [
                0,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                12,
                14,
                16,
                18,
                20,
                25,
                30,
                35,
                40,
                45,
                50,
                60,
                70,
                80,
                90,
                100,
                120,
                140,
                200,
                300,
                500,
                1000,
            ]
        )
        for metric in (Metric.PM1, Metric.PM25, Metric.PM10)
    },
    # NO2, µg/m³. Electrochemical cells read slightly negative around zero after
    # baseline correction, hence the first bin; 5 µg/m³ steps around the WHO 2021
    # values (10 annual / 25 daily); 200 is the EU hourly limit value
    # (Directive 2008/50/EC, Annex XI); above 400 an urban reading is an alarm anyway.
    Metric.NO2: _edges(
        [
            -20,
            0,
            5,
            10,
            15,
            20,
            25,
            30,
            35,
            40,
            45,
            50,
            60,
            70,
            80,
            90,
            100,
            110,
            120,
            140,
            160,
            180,
            200,
            230,
            260,
            300,
            350,
            400,
            500,
            700,
            1000,
            1500,
            2000,
        ]
    ),
    # Noise, dB(A): 2 dB steps over 40–100 dB(A), the span of urban street levels
    # (quiet residential night ~40, heavy traffic kerbside ~80, sirens ~100);
    # 30 and 130 bound the range of typical sound-level modules.
    Metric.NOISE: _edges([30, *range(40, 101, 2), 130]),
    # Air temperature, °C: 2.5 °C steps over -30..50, beyond Dutch extremes.
    Metric.TEMPERATURE: _edges(list(np.linspace(-30.0, 50.0, HIST_BINS + 1))),
    # Relative humidity, %: 3.125 % steps over the whole 0–100 % scale.
    Metric.HUMIDITY: _edges(list(np.linspace(0.0, 100.0, HIST_BINS + 1))),
}
