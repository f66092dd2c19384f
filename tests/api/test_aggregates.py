"""api.aggregates.cell_features: the features /v1/cells serialises are exactly those its
response models give, for every kind of cell (thin, banded or not, one ride, noise,
corrected, with and without a covariate)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import pydantic_core
import pytest

from api.aggregates import cell_features, cell_features_json, judge
from api.bands import MetricScale, load_bands
from api.models import (
    CellCollection,
    CellFeature,
    CellStats,
    Corrections,
    MetricName,
    Polygon,
    Values,
)
from api.stats import COVARIATES, finite_or_none, rounded
from storage.cell_stats import combines
from storage.merged_stats import STATS_DTYPE
from storage.selection import Selection
from stream.core.partials import Metric

START = datetime(2026, 11, 21, 8, tzinfo=UTC)
END = datetime(2026, 11, 21, 9, tzinfo=UTC)
MIN_READINGS = 10


def model_features(
    stats: np.ndarray,
    sel: Selection,
    scale: MetricScale,
    covariate: np.ndarray | None,
) -> list[CellFeature]:
    """The reference: a validated model per cell, as the route built them before."""
    j = judge(stats, sel.metric, scale, MIN_READINGS, covariate)
    shown = rounded(stats, sel.metric)
    noise = sel.metric is Metric.NOISE
    features = []
    for i, row in enumerate(shown):
        cell = int(row["cell"])
        band = scale.bands[int(j.band[i])] if j.band[i] >= 0 else None
        props = CellStats(
            cell=format(cell, "x"),
            resolution=sel.resolution,
            metric=MetricName(sel.metric.api_name),
            unit=scale.unit,
            status="ok" if j.sufficient[i] else "insufficient",
            n_readings=int(row["n"]),
            rides=int(row["rides"]),
            days=int(row["days"]),
            mean=finite_or_none(row["mean"]),
            std=finite_or_none(row["std"]),
            min=finite_or_none(row["min"]),
            max=finite_or_none(row["max"]),
            p50=finite_or_none(row["p50"]),
            p95=finite_or_none(row["p95"]),
            p50_error_bound=finite_or_none(row["p50_err"]),
            p95_error_bound=finite_or_none(row["p95_err"]),
            laeq_db=finite_or_none(row["laeq_db"]) if noise else None,
            lamax_db=finite_or_none(row["lamax_db"]) if noise else None,
            ci95_low=finite_or_none(j.ci_low[i]),
            ci95_high=finite_or_none(j.ci_high[i]),
            interval_reason=j.interval_reason[i],
            band=band.label if band else None,
            colour=band.colour if band else None,
        )
        ring = [(round(lng, 7), round(lat, 7)) for lat, lng in h3i.cell_to_boundary(cell)]
        features.append(
            CellFeature(
                id=props.cell,
                geometry=Polygon(coordinates=[[*ring, ring[0]]]),
                properties=props,
            )
        )
    return features


def some_stats(metric: Metric, rows: int, seed: int) -> np.ndarray:
    """Cells of every kind: thin and busy, one ride and many, no spread, NaN figures,
    weights known and unknown, means across the bands."""
    rng = np.random.default_rng(seed)
    out = np.zeros(rows, dtype=STATS_DTYPE)
    cells = sorted(
        {h3i.latlng_to_cell(52.1 + 0.1 * a, 4.6 + 0.1 * b, 10) for a, b in rng.random((rows, 2))}
    )
    out = out[: len(cells)]
    out["cell"] = cells
    out["metric"], out["resolution"], out["window_s"] = metric, 10, 60
    n = rng.integers(0, 400, len(out))
    n[:3] = (0, 1, 2)
    out["n"] = n
    base = 55.0 if metric is Metric.NOISE else 20.0
    out["mean"] = rng.gamma(2.0, base / 2, len(out))
    out["std"] = np.where(n >= 2, rng.gamma(2.0, 2.0, len(out)), np.nan)
    out["min"] = out["mean"] - rng.random(len(out)) * 10
    out["max"] = out["mean"] + rng.random(len(out)) * 10
    out["p50"] = out["mean"] + rng.normal(0, 1, len(out))
    out["p95"] = out["max"] - rng.random(len(out))
    out["p50_err"] = rng.random(len(out))
    out["p95_err"] = rng.random(len(out))
    out["laeq_db"] = out["mean"] + 3 if metric is Metric.NOISE else np.nan
    out["lamax_db"] = out["max"] + 5 if metric is Metric.NOISE else np.nan
    out["rides"] = rng.integers(1, 12, len(out))
    out["days"] = rng.integers(1, 5, len(out))
    out["correction_u"] = np.nan
    out["ride_weight"] = n.astype(float)
    out["ride_weight_sq"] = n.astype(float) ** 2 / out["rides"]
    out["ride_weight"][3] = np.nan  # a share not known (stored before migration 0112)
    out["ride_weight_sq"][3] = np.nan
    out["mean"][4] = np.nan
    out["min"][0] = np.nan
    return out


def humidity(stats: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = stats.copy()
    cov["mean"] = rng.uniform(40, 100, len(cov))
    cov["std"] = rng.uniform(0, 10, len(cov))
    cov["mean"][5] = np.nan  # a cell the covariate lacks
    return cov


@pytest.mark.parametrize(
    ("metric", "corrected", "with_covariate"),
    [
        (Metric.PM25, False, True),
        (Metric.PM25, False, False),
        (Metric.PM25, True, False),
        (Metric.NO2, False, True),
        (Metric.NOISE, False, False),
        (Metric.HUMIDITY, False, False),  # its unit "%" is no format character
        (Metric.TEMPERATURE, False, False),
        (Metric.NOISE, True, False),
    ],
)
def test_the_features_are_those_the_models_give(
    metric: Metric, corrected: bool, with_covariate: bool
) -> None:
    stats = some_stats(metric, 400, seed=int(metric) + 10 * corrected)
    if corrected:
        stats["correction_u"] = np.random.default_rng(1).uniform(0.5, 3, len(stats))
    covariate = humidity(stats, seed=3) if with_covariate else None
    sel = Selection(metric, 10, 60, START, END, corrected=corrected)
    scale = load_bands().scale(metric)
    expected = model_features(stats, sel, scale, covariate)
    got = cell_features(stats, sel, scale, min_readings=MIN_READINGS, covariate=covariate)
    assert len(got) == len(stats) > 300
    # (the rings' pairs are tuples here and lists in the models' dump: the same JSON)
    assert json.loads(pydantic_core.to_json(got)) == [
        f.model_dump(mode="json", by_alias=True) for f in expected
    ]
    # And the whole response, byte for byte, as the route serialises it.
    envelope: dict[str, Any] = {
        "metric": MetricName(metric.api_name),
        "resolution": 10,
        "window_s": 60,
        "time_from": START,
        "time_to": END,
        "role": "officer",
        "band_version": "eaqi-2024",
        "note": "indicative",
        "corrections": Corrections(values=Values.CORRECTED if corrected else Values.RAW),
    }
    body = CellCollection(**envelope, features=[]).model_dump(mode="json", by_alias=True)
    body["features"] = got
    reference = CellCollection(**envelope, features=expected).model_dump_json(by_alias=True)
    assert pydantic_core.to_json(body) == reference.encode()
    # The route's way: the features serialised from columns, in place of the empty list.
    body["features"] = []
    features = cell_features_json(stats, sel, scale, min_readings=MIN_READINGS, covariate=covariate)
    spliced = pydantic_core.to_json(body).replace(b'"features":[]', b'"features":' + features)
    assert spliced == reference.encode()


def test_no_cells_no_features() -> None:
    stats = np.zeros(0, dtype=STATS_DTYPE)
    sel = Selection(Metric.PM25, 10, 60, START, END)
    assert cell_features(stats, sel, load_bands().scale(Metric.PM25), min_readings=1) == []
    scale = load_bands().scale(Metric.PM25)
    assert cell_features_json(stats, sel, scale, min_readings=1) == b"[]"


def test_every_covariate_is_read_in_the_metric_s_own_query_for_keyed_roles() -> None:
    # A covariate pair without a combined query would fall back to a second query.
    for metric, other in COVARIATES.items():
        assert combines(Selection(metric, 10, 60, START, END), other)
        assert not combines(Selection(metric, 10, 60, START, END, min_rides=3), other)
