"""Colour bands: kept as data, with their source, classifying values as the EEA does."""

from __future__ import annotations

import numpy as np
import pytest

from api.bands import NO_BAND, band_versions, load_bands
from stream.core.partials import Metric


def test_every_metric_has_a_scale_in_every_version() -> None:
    for version in band_versions():
        bands = load_bands(version)
        assert set(bands.scales) == set(Metric)
        for scale in bands.scales.values():
            assert scale.bands
            assert all(b.colour.startswith("#") and len(b.colour) == 7 for b in scale.bands)


def test_eaqi_bands_name_their_source_and_follow_who_2021() -> None:
    bands = load_bands("eaqi-2024")
    pm25 = bands.scale(Metric.PM25)
    assert pm25.source is not None
    assert "airindex.eea.europa.eu" in pm25.source
    assert [b.label for b in pm25.bands] == [
        "Good",
        "Fair",
        "Moderate",
        "Poor",
        "Very poor",
        "Extremely poor",
    ]
    # The first band ends at the WHO 2021 annual guideline, the second at the 24-hour one.
    for metric, key in ((Metric.PM25, "pm25"), (Metric.PM10, "pm10"), (Metric.NO2, "no2")):
        scale = bands.scale(metric)
        assert scale.bands[0].upper == bands.who_2021["annual"][key]
        assert scale.bands[1].upper == bands.who_2021["24h"][key]
    assert bands.who_2021["annual"] == {"pm25": 5, "pm10": 15, "no2": 10}
    assert bands.who_2021["24h"] == {"pm25": 15, "pm10": 45, "no2": 25}


def test_classify_is_lower_inclusive_and_nan_has_no_band() -> None:
    scale = load_bands("eaqi-2024").scale(Metric.PM25)
    got = scale.classify(np.array([0.0, 4.99, 5.0, 14.9, 15.0, 140.0, 5000.0, np.nan]))
    assert got.tolist() == [0, 0, 1, 1, 2, 5, 5, NO_BAND]
    assert scale.band_of(None) is None
    band = scale.band_of(7.0)
    assert band is not None
    assert band.label == "Fair"


def test_noise_scale_is_in_decibels_with_5_db_classes() -> None:
    scale = load_bands().scale(Metric.NOISE)
    assert scale.unit == "dB(A)"
    lowers = [b.lower for b in scale.bands]
    assert lowers[1:] == [45, 50, 55, 60, 65, 70, 75]
    assert scale.reference is not None
    assert "53" in scale.reference  # WHO 2018 road traffic Lden


def test_an_unknown_version_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown band version 'eaqi-1999'"):
        load_bands("eaqi-1999")


def test_the_transparent_row_is_last_in_the_lookup_table() -> None:
    scale = load_bands().scale(Metric.NO2)
    assert scale.rgba.shape == (len(scale.bands) + 1, 4)
    assert scale.rgba[NO_BAND].tolist() == [0, 0, 0, 0]
    assert all(row[3] > 0 for row in scale.rgba[:-1])
