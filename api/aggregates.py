"""Which windows a range is merged from, and what the API adds to merged partials.

A range is merged from windows of one size, the largest the caller may see
(:func:`api.privacy.allowed_windows`) that still gives at least
:data:`MIN_WINDOWS_PER_RANGE` windows in the range (fewer rows to read: a month
is 30 daily windows, not 720 hourly ones), and the range is widened to whole
windows of that size. Responses say which range they really cover.
:func:`judge` adds the interval of the shown value (api/stats.py), sufficiency and the
colour band, decided on the value as shown (rounded to the sensor's resolution);
:func:`read_series` and :func:`read_cells` read a privacy-filtered selection
(:func:`api.privacy.selection`), and for PM and NO2 the same selection of the
humidity or temperature that their interval corrects for (``api.stats.COVARIATES``);
:func:`read_series` answers with the response models, :func:`cell_features` with what
they would serialise and :func:`cell_features_json` with those bytes (a thousand cells
and more, built column by column).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import psycopg
import pydantic_core

from api.bands import NO_BAND, MetricScale
from api.models import TimeseriesPoint
from api.stats import (
    COVARIATES,
    DECIMALS,
    finite_or_none,
    grid_mean,
    mean_interval,
    round_interval,
    rounded,
)
from storage.cell_stats import acell_stats, acell_stats_with, combines
from storage.merged_stats import STATS_DTYPE
from storage.selection import BBox, Selection
from storage.time_series import atime_series
from stream.core.partials import Metric
from stream.core.summary import laeq_db

MIN_WINDOWS_PER_RANGE = 24


def choose_window(range_s: float, allowed: tuple[int, ...]) -> int:
    """The window size a range of ``range_s`` is merged from."""
    fitting = [w for w in allowed if range_s / w >= MIN_WINDOWS_PER_RANGE]
    return max(fitting) if fitting else min(allowed)


def align(start: datetime, end: datetime, window_s: int) -> tuple[datetime, datetime]:
    """Widen [start, end) to whole windows of ``window_s``."""
    s = int(start.timestamp()) // window_s * window_s
    e = -(-int(np.ceil(end.timestamp())) // window_s) * window_s
    return datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC)


@dataclass(frozen=True, slots=True)
class Judged:
    """What the API adds to ``storage.merged_stats.STATS_DTYPE`` rows: interval, sufficiency,
    band."""

    ci_low: np.ndarray
    ci_high: np.ndarray
    interval_reason: list[str | None]  # why there is no interval (api.stats.REASONS)
    sufficient: np.ndarray  # bool
    band: np.ndarray  # band index, NO_BAND where insufficient


def judge(
    stats: np.ndarray,
    metric: Metric,
    scale: MetricScale,
    min_readings: int,
    covariate: np.ndarray | None = None,
) -> Judged:
    """``covariate``: row for row, the statistics :func:`api.stats.mean_interval` needs
    (:func:`aligned`)."""
    iv = round_interval(mean_interval(stats, metric, covariate=covariate), metric)
    sufficient = stats["n"] >= min_readings
    # Noise is coloured by its energy average (docs/design.md decision 3), the rest by the
    # mean; both as shown, so a mean stored as 4.9999999 is coloured as the 5.0 it shows.
    shown = rounded(stats, metric)
    value = shown["laeq_db"] if metric is Metric.NOISE else shown["mean"]
    band = np.where(sufficient, scale.classify(value), NO_BAND).astype(np.int16)
    # An empty bucket of a gap-filled series has nothing to explain: no reason either.
    reason = [None if n == 0 else r for n, r in zip(stats["n"].tolist(), iv.reason, strict=True)]
    return Judged(
        ci_low=iv.low, ci_high=iv.high, interval_reason=reason, sufficient=sufficient, band=band
    )


def aligned(stats: np.ndarray, other: np.ndarray, key: str) -> np.ndarray:
    """``other``'s rows in the order of ``stats``' by ``key`` (a cell or a window start);
    a row ``other`` lacks is an empty one (NaN statistics)."""
    out = np.zeros(len(stats), dtype=STATS_DTYPE)
    for name in STATS_DTYPE.names or ():
        if STATS_DTYPE[name].kind == "f":
            out[name] = np.nan
    if len(other) and len(stats):
        at = np.searchsorted(other[key], stats[key])
        at = np.minimum(at, len(other) - 1)
        found = other[key][at] == stats[key]
        out[found] = other[at[found]]
    return out


def tile_bands(
    cells: np.ndarray, metric: Metric, scale: MetricScale, min_readings: int
) -> np.ndarray:
    """Band index per row of :func:`storage.tiles.cell_means` output."""
    n = cells["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric is Metric.NOISE:
            value = laeq_db(cells["energy"], cells["duration_s"])
            value = np.round(value, DECIMALS[metric])  # as shown, like judge
        else:
            value = grid_mean(cells["sum"], n, DECIMALS[metric])  # as shown, like judge
    return np.where(n >= min_readings, scale.classify(value), NO_BAND).astype(np.int16)


async def read_series(
    conn: psycopg.AsyncConnection[Any],
    sel: Selection,
    scale: MetricScale,
    *,
    bucket_s: int,
    min_readings: int,
    bbox: BBox | None = None,
    cell: int | None = None,
) -> list[TimeseriesPoint]:
    """Every bucket of ``bucket_s`` over ``sel``, in a bbox or a cell (or everywhere); one
    without data, or withheld, is an explicit empty one (``n_readings`` 0, values null), so a
    chart shows the gap."""
    stats = await atime_series(conn, sel, bucket_s, bbox=bbox, cell=cell, gapfill=True)
    covariate = None
    if sel.metric in COVARIATES and not sel.corrected:
        other = await atime_series(
            conn,
            dataclasses.replace(sel, metric=COVARIATES[sel.metric]),
            bucket_s,
            bbox=bbox,
            cell=cell,
        )
        covariate = aligned(stats, other, "window_start_ms")
    j = judge(stats, sel.metric, scale, min_readings, covariate)
    stats = rounded(stats, sel.metric)
    noise = sel.metric is Metric.NOISE
    return [
        TimeseriesPoint(
            start=datetime.fromtimestamp(int(row["window_start_ms"]) / 1000, UTC),
            n_readings=int(row["n"]),
            rides=int(row["rides"]),
            mean=finite_or_none(row["mean"]),
            std=finite_or_none(row["std"]),
            min=finite_or_none(row["min"]),
            max=finite_or_none(row["max"]),
            p50=finite_or_none(row["p50"]),
            p95=finite_or_none(row["p95"]),
            p50_error_bound=finite_or_none(row["p50_err"]),
            p95_error_bound=finite_or_none(row["p95_err"]),
            laeq_db=finite_or_none(row["laeq_db"]) if noise else None,
            ci95_low=finite_or_none(j.ci_low[i]),
            ci95_high=finite_or_none(j.ci_high[i]),
            interval_reason=j.interval_reason[i],
            status="ok" if j.sufficient[i] else "insufficient",
        )
        for i, row in enumerate(stats)
    ]


#: Cell outlines kept for reuse: a cell's outline never changes, and computing and
#: rounding it was a third of an officer's one-hour /v1/cells at resolution 10 (1,420
#: cells: 29 ms in h3 and 11 ms rounding, bench/bench_reads.py's data). About 0.6 kB
#: each: at most ~40 MB.
RING_CACHE_CELLS = 65_536


@functools.lru_cache(maxsize=RING_CACHE_CELLS)
def _ring(cell: int) -> list[tuple[float, float]]:
    """The cell's outline as a closed GeoJSON ring (lng, lat), to 7 decimals. Callers
    must not change the list: it is shared."""
    ring = [(round(lng, 7), round(lat, 7)) for lat, lng in h3i.cell_to_boundary(cell)]
    return [*ring, ring[0]]


async def read_cells(
    conn: psycopg.AsyncConnection[Any], sel: Selection, bbox: BBox
) -> tuple[np.ndarray, np.ndarray | None]:
    """The statistics of each cell of ``sel`` with data in ``bbox`` (``STATS_DTYPE``), and
    row for row those of the covariate its interval needs (``api.stats.COVARIATES``;
    None for other metrics and for corrected values), for :func:`cell_features`."""
    if sel.metric in COVARIATES and combines(sel, COVARIATES[sel.metric]):
        # Keyed roles: both in one query (storage.cell_stats.acell_stats_with).
        stats, other = await acell_stats_with(conn, sel, COVARIATES[sel.metric], bbox)
        return stats, aligned(stats, other, "cell")
    stats = await acell_stats(conn, sel, bbox)
    covariate = None
    if sel.metric in COVARIATES and not sel.corrected and len(stats):
        other = await acell_stats(
            conn, dataclasses.replace(sel, metric=COVARIATES[sel.metric]), bbox
        )
        covariate = aligned(stats, other, "cell")
    return stats, covariate


def cell_features(
    stats: np.ndarray,
    sel: Selection,
    scale: MetricScale,
    *,
    min_readings: int,
    covariate: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One GeoJSON feature per cell of :func:`read_cells`' statistics (and covariate), as
    the JSON-ready dict of its ``api.models.CellFeature``: its fields in their order, the
    values as ``model_dump(mode="json")`` gives them, so that the response serialised
    from these is byte for byte the one the models give (tests/api/test_cells.py).
    The route serialises the same features with :func:`cell_features_json`."""
    columns = _columns(stats, sel, scale, min_readings, covariate)
    head = {"resolution": sel.resolution, "metric": sel.metric.api_name, "unit": scale.unit}
    features = []
    for cell, status, n, rides, days, *figures, reason, band in zip(*columns, strict=True):
        cell_id = format(cell, "x")
        props: dict[str, Any] = {"cell": cell_id, **head, "status": status}
        props["n_readings"], props["rides"], props["days"] = n, rides, days
        props.update(zip(_FIGURES, figures, strict=True))
        props["interval_reason"] = reason
        props["band"], props["colour"] = (band.label, band.colour) if band else (None, None)
        features.append(
            {
                "type": "Feature",
                "id": cell_id,
                "geometry": {"type": "Polygon", "coordinates": [_ring(cell)]},
                "properties": props,
            }
        )
    return features


def cell_features_json(
    stats: np.ndarray,
    sel: Selection,
    scale: MetricScale,
    *,
    min_readings: int,
    covariate: np.ndarray | None = None,
) -> bytes:
    """``pydantic_core.to_json(cell_features(...))``, byte for byte, without the dicts.

    Each column is serialised once by pydantic_core (numbers and nulls, which hold no
    comma, split back into one item per cell), the strings of few values and the cells'
    rings once per value, and each feature put together from those pieces: an officer's
    hour at resolution 10 spent about 13 µs per cell building and serialising its dict
    (bench/bench_reads.py's backlog, cProfile); tests/api/test_aggregates.py compares
    the two."""
    if not len(stats):
        return b"[]"
    j = judge(stats, sel.metric, scale, min_readings, covariate)
    shown = rounded(stats, sel.metric)
    head = pydantic_core.to_json(
        {"resolution": sel.resolution, "metric": sel.metric.api_name, "unit": scale.unit}
    )[1:-1].replace(b"%", b"%%")  # a unit may be "%"
    strings = functools.partial(_json_of, {})
    status = [strings("ok" if s else "insufficient") for s in j.sufficient.tolist()]
    reasons = [strings(r) for r in j.interval_reason]
    no_band = (b"null", b"null")
    band_json = [(strings(b.label), strings(b.colour)) for b in scale.bands]
    bands = [band_json[b] if b >= 0 else no_band for b in j.band.tolist()]
    nothing = np.full(len(shown), np.nan)
    noise = sel.metric is Metric.NOISE
    figures = [
        *(shown[name] for name in _SHOWN),
        shown["laeq_db"] if noise else nothing,
        shown["lamax_db"] if noise else nothing,
        j.ci_low,
        j.ci_high,
    ]
    numbers = [
        *(_json_items(shown[name].tolist()) for name in ("n", "rides", "days")),
        *(_json_items(f.astype(np.float64).tolist()) for f in figures),
    ]
    cells = shown["cell"].tolist()
    ids = [b'"%x"' % cell for cell in cells]
    template = (
        b'{"type":"Feature","id":%b,"geometry":{"type":"Polygon","coordinates":[%b]},'
        b'"properties":{"cell":%b,'
        + head
        + b',"status":%b'
        + b"".join(b',"%b":%%b' % name.encode() for name in _NUMBERS)
        + b',"interval_reason":%b,"band":%b,"colour":%b}}'
    )
    features = [
        template % (cell_id, _ring_json(cell), cell_id, s, *values, r, *band)
        for cell_id, cell, s, r, band, *values in zip(
            ids, cells, status, reasons, bands, *numbers, strict=True
        )
    ]
    return b"[" + b",".join(features) + b"]"


def _json_of(cache: dict[str | None, bytes], value: str | None) -> bytes:
    """``value`` as pydantic_core serialises it, kept in ``cache``."""
    out = cache.get(value)
    if out is None:
        out = cache[value] = pydantic_core.to_json(value)
    return out


def _json_items(values: list[Any]) -> list[bytes]:
    """Each of ``values`` (numbers) as pydantic_core serialises it in a list, null where
    not finite (as :func:`_nullable` gives it)."""
    items = pydantic_core.to_json(values, inf_nan_mode="null")[1:-1].split(b",")
    if len(items) != len(values):  # a number never holds a comma: a bug, not bad input
        raise ValueError(f"{len(values)} numbers serialised as {len(items)} items")
    return items


@functools.lru_cache(maxsize=RING_CACHE_CELLS)
def _ring_json(cell: int) -> bytes:
    """The cell's ring (:func:`_ring`) as the JSON pydantic_core gives it."""
    return pydantic_core.to_json(_ring(cell))


def _columns(
    stats: np.ndarray,
    sel: Selection,
    scale: MetricScale,
    min_readings: int,
    covariate: np.ndarray | None,
) -> list[list[Any]]:
    """Per cell, in the order of a feature's properties: cell (int), status, n_readings,
    rides, days, the ``_FIGURES`` (None where not finite), interval_reason, band (a
    ``Band`` or None)."""
    j = judge(stats, sel.metric, scale, min_readings, covariate)
    shown = rounded(stats, sel.metric)
    noise = sel.metric is Metric.NOISE
    nothing: list[float | None] = [None] * len(shown)
    return [
        shown["cell"].tolist(),
        ["ok" if s else "insufficient" for s in j.sufficient.tolist()],
        shown["n"].tolist(),
        shown["rides"].tolist(),
        shown["days"].tolist(),
        *(_nullable(shown[name]) for name in _SHOWN),
        _nullable(shown["laeq_db"]) if noise else nothing,
        _nullable(shown["lamax_db"]) if noise else nothing,
        _nullable(j.ci_low),
        _nullable(j.ci_high),
        j.interval_reason,
        [scale.bands[b] if b >= 0 else None for b in j.band.tolist()],
    ]


#: ``STATS_DTYPE`` fields shown as they are, and every nullable figure of
#: ``api.models.CellStats`` in its field order (the response's key order).
_SHOWN = ("mean", "std", "min", "max", "p50", "p95", "p50_err", "p95_err")
_FIGURES = (
    "mean",
    "std",
    "min",
    "max",
    "p50",
    "p95",
    "p50_error_bound",
    "p95_error_bound",
    "laeq_db",
    "lamax_db",
    "ci95_low",
    "ci95_high",
)
#: The numeric properties of a feature after its status, in their order.
_NUMBERS = ("n_readings", "rides", "days", *_FIGURES)


def _nullable(values: np.ndarray) -> list[float | None]:
    """A column as JSON numbers, null where not finite (:func:`api.stats.finite_or_none`)."""
    return [v if math.isfinite(v) else None for v in values.astype(np.float64).tolist()]
