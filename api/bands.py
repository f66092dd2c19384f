"""Colour bands per metric, loaded from ``api/data/bands.json``.

The numbers live in the data file with their source and version named
(docs/design.md: the EEA has changed the EAQI bands over time), never in code.
:func:`load_bands` builds a :class:`BandSet` for one EAQI version; it classifies
values into band indices and gives the RGBA lookup table the tile renderer uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from stream.core.partials import Metric

#: Band index meaning "no colour": no data, or too little data to say.
NO_BAND = -1

#: Opacity of coloured cells on tiles (0-255): enough to read the base map under them.
TILE_ALPHA = 190

UNITS: dict[Metric, str] = {
    Metric.PM1: "µg/m³",
    Metric.PM25: "µg/m³",
    Metric.PM10: "µg/m³",
    Metric.NO2: "µg/m³",
    Metric.NOISE: "dB(A)",
    Metric.TEMPERATURE: "°C",
    Metric.HUMIDITY: "%",
}


@dataclass(frozen=True, slots=True)
class Band:
    label: str
    colour: str  # "#RRGGBB"
    lower: float  # inclusive
    upper: float | None  # exclusive; None for the open-ended last band


@dataclass(frozen=True, slots=True)
class MetricScale:
    """The bands of one metric and where they come from."""

    metric: Metric
    unit: str
    name: str
    source: str | None
    reference: str | None
    bands: tuple[Band, ...]
    lower_bounds: np.ndarray  # float64, ascending
    rgba: np.ndarray  # (len(bands) + 1, 4) uint8; the last row is transparent (NO_BAND)

    def classify(self, values: np.ndarray) -> np.ndarray:
        """Band index per value (int16); NaN gives :data:`NO_BAND`."""
        values = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.lower_bounds, values, side="right") - 1
        idx = np.clip(idx, 0, len(self.bands) - 1).astype(np.int16)
        idx[np.isnan(values)] = NO_BAND
        return idx

    def band_of(self, value: float | None) -> Band | None:
        if value is None or np.isnan(value):
            return None
        return self.bands[int(self.classify(np.array([value]))[0])]


@dataclass(frozen=True, slots=True)
class BandSet:
    version: str
    scales: dict[Metric, MetricScale]
    who_2021: dict[str, Any]
    notes: dict[str, str]

    def scale(self, metric: Metric) -> MetricScale:
        return self.scales[metric]


def _hex_rgba(colour: str, alpha: int) -> tuple[int, int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), alpha


def _scale(
    metric: Metric,
    *,
    name: str,
    source: str | None,
    reference: str | None,
    labels: list[str],
    colours: list[str],
    lower: list[float],
) -> MetricScale:
    if not len(labels) == len(colours) == len(lower) or sorted(lower) != lower:
        msg = f"bands.json: {metric.api_name} needs as many labels, colours and ascending bounds"
        raise ValueError(msg)
    bands = tuple(
        Band(
            label=label,
            colour=colour,
            lower=float(lo),
            upper=float(lower[i + 1]) if i + 1 < len(lower) else None,
        )
        for i, (label, colour, lo) in enumerate(zip(labels, colours, lower, strict=True))
    )
    rgba = np.zeros((len(bands) + 1, 4), dtype=np.uint8)
    for i, band in enumerate(bands):
        rgba[i] = _hex_rgba(band.colour, TILE_ALPHA)
    return MetricScale(
        metric=metric,
        unit=UNITS[metric],
        name=name,
        source=source,
        reference=reference,
        bands=bands,
        lower_bounds=np.array(lower, dtype=np.float64),
        rgba=rgba,
    )


@cache
def _raw() -> dict[str, Any]:
    text = resources.files("api.data").joinpath("bands.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def band_versions() -> tuple[str, ...]:
    return tuple(_raw()["air_quality"])


@cache
def load_bands(version: str = "eaqi-2024") -> BandSet:
    """The colour scales of every metric, with the EAQI ``version`` for PM and NO2."""
    raw = _raw()
    try:
        aq = raw["air_quality"][version]
    except KeyError:
        known = ", ".join(raw["air_quality"])
        msg = f"unknown band version {version!r}; known: {known}"
        raise ValueError(msg) from None
    scales: dict[Metric, MetricScale] = {}
    for metric, key in (
        (Metric.PM25, "pm25"),
        (Metric.PM10, "pm10"),
        (Metric.NO2, "no2"),
        (Metric.PM1, "pm25"),
    ):
        scales[metric] = _scale(
            metric,
            name=aq["name"],
            source=aq["source"],
            reference=aq["reference"],
            labels=aq["labels"],
            colours=aq["colours"],
            lower=aq["lower_bounds"][key],
        )
    for metric, key in (
        (Metric.NOISE, "noise"),
        (Metric.TEMPERATURE, "temperature"),
        (Metric.HUMIDITY, "humidity"),
    ):
        spec = raw[key]
        scales[metric] = _scale(
            metric,
            name=spec["name"],
            source=spec.get("source"),
            reference=spec.get("reference"),
            labels=spec["labels"],
            colours=spec["colours"],
            lower=spec["lower_bounds"],
        )
    return BandSet(
        version=version,
        scales=scales,
        who_2021=raw["who_2021"],
        notes={"pm1": raw["pm1_note"], "about": raw["about"]},
    )
