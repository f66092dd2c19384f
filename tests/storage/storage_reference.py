"""An obvious aggregation used to check storage: one partial per reading, then merged.

It follows the contract of stream.core.partials (not the stream's own binning of
histograms, which storage does not need to know: any fixed bins will do here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
import pytest
from h3.api import basic_int as h3int

from stream.core.partials import (
    HIST_BINS,
    METRIC_COLUMNS,
    PARTIAL_DTYPE,
    PRESENCE_DTYPE,
    PRESENCE_KEY_FIELDS,
    Metric,
    metric_bit,
)
from stream.core.resolution import quantise

HIST_LO, HIST_HI = 0.0, 160.0
#: (resolution, window_s, cell, window_start_ms) -> (distinct rides, sorted distinct days)
RideCounts = dict[tuple[int, int, int, int], tuple[int, list[int]]]
KEY = ["metric", "resolution", "cell", "window_s", "window_start_ms"]


def _parents(cells: np.ndarray, res: int) -> np.ndarray:
    return np.array([h3int.cell_to_parent(int(c), res) for c in cells], dtype=np.int64)


def reading_partials(
    enriched: np.ndarray, resolutions: Sequence[int], windows_s: Sequence[int]
) -> np.ndarray:
    """One partial per (reading, metric with a value, resolution, window size)."""
    located = enriched[enriched["cell"] != 0]
    out = []
    for res in resolutions:
        parents = _parents(located["cell"], res)
        for w in windows_s:
            starts = located["ts_ms"] - located["ts_ms"] % (w * 1000)
            for metric, column in METRIC_COLUMNS.items():
                x = quantise(metric, located[column])  # the kit's decimals, not float32's
                ok = ~np.isnan(x)
                p = np.zeros(int(ok.sum()), dtype=PARTIAL_DTYPE)
                p["metric"], p["resolution"], p["window_s"] = metric, res, w
                p["cell"], p["window_start_ms"] = parents[ok], starts[ok]
                x = x[ok]
                p["n"], p["sum"], p["sumsq"], p["min"], p["max"] = 1, x, x * x, x, x
                p["lamax_db"] = np.nan
                if metric is Metric.NOISE:
                    t = located["interval_ms"][ok] / 1000.0
                    p["energy"], p["duration_s"] = t * 10 ** (x / 10), t
                    p["lamax_db"] = quantise(metric, located["noise_lamax_db"][ok])
                bins = np.clip(
                    ((x - HIST_LO) / (HIST_HI - HIST_LO) * HIST_BINS).astype(np.int64),
                    0,
                    HIST_BINS - 1,
                )
                p["hist"][np.arange(len(p)), bins] = 1
                out.append(p)
    return np.concatenate(out) if out else np.zeros(0, PARTIAL_DTYPE)


def merge(partials: np.ndarray) -> np.ndarray:
    """Group partials by key, merging them; sorted by key."""
    if len(partials) == 0:
        return partials.copy()
    keys, inverse = np.unique(partials[KEY], return_inverse=True)
    out = np.zeros(len(keys), dtype=PARTIAL_DTYPE)
    for k in KEY:
        out[k] = keys[k]
    for f in ("n", "sum", "sumsq", "energy", "duration_s"):
        np.add.at(out[f], inverse, partials[f])
    hist = np.zeros((len(keys), HIST_BINS), dtype=np.int64)
    np.add.at(hist, inverse, partials["hist"])
    out["hist"] = hist
    out["min"], out["max"], out["lamax_db"] = np.inf, -np.inf, np.nan
    np.minimum.at(out["min"], inverse, partials["min"])
    np.maximum.at(out["max"], inverse, partials["max"])
    np.fmax.at(out["lamax_db"], inverse, partials["lamax_db"])
    return out


def presence(
    enriched: np.ndarray, resolutions: Sequence[int], windows_s: Sequence[int]
) -> np.ndarray:
    located = enriched[enriched["cell"] != 0]
    out = []
    for res in resolutions:
        parents = _parents(located["cell"], res)
        for w in windows_s:
            p = np.zeros(len(located), dtype=PRESENCE_DTYPE)
            p["resolution"], p["cell"], p["window_s"] = res, parents, w
            p["window_start_ms"] = located["ts_ms"] - located["ts_ms"] % (w * 1000)
            p["ride_id"] = located["ride_id"]
            p["day"] = located["ts_ms"] // 86_400_000
            p["metrics"] = _measured(located)
            p["readings"] = p["metrics"] != 0
            noise = quantise(Metric.NOISE, located["noise_laeq_db"])
            p["noise_energy"] = np.where(
                np.isnan(noise), 0.0, located["interval_ms"] / 1000.0 * 10 ** (noise / 10)
            )
            out.append(p[p["readings"] > 0])
    if not out:
        return np.zeros(0, PRESENCE_DTYPE)
    rows = np.concatenate(out)
    # One row per (cell-window, ride, day), with the metrics of all its readings, how
    # many there were and their noise energy.
    keys = list(PRESENCE_KEY_FIELDS)
    unique, inverse = np.unique(rows[keys], return_inverse=True)
    merged = np.zeros(len(unique), dtype=PRESENCE_DTYPE)
    for name in keys:
        merged[name] = unique[name]
    np.bitwise_or.at(merged["metrics"], inverse.ravel(), rows["metrics"])
    np.add.at(merged["readings"], inverse.ravel(), rows["readings"])
    np.add.at(merged["noise_energy"], inverse.ravel(), rows["noise_energy"])
    return merged


def _measured(readings: np.ndarray) -> np.ndarray:
    """The presence bits of the metrics each reading has a value for."""
    bits = np.zeros(len(readings), dtype=np.int16)
    for metric, column in METRIC_COLUMNS.items():
        bits |= np.where(np.isnan(readings[column]), 0, metric_bit(metric)).astype(np.int16)
    return bits


class ReferenceAggregate:
    """``aggregate(new_readings) -> (partials, presence)`` that also records what it saw."""

    def __init__(self, resolutions: Sequence[int] = (8, 10), windows_s: Sequence[int] = (60, 3600)):
        self.resolutions = tuple(resolutions)
        self.windows_s = tuple(windows_s)
        self.calls: list[np.ndarray] = []

    def __call__(self, enriched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(enriched.copy())
        return (
            merge(reading_partials(enriched, self.resolutions, self.windows_s)),
            presence(enriched, self.resolutions, self.windows_s),
        )


def ride_counts(presence_rows: np.ndarray) -> RideCounts:
    """Distinct rides and days per cell-window of ``PRESENCE_DTYPE`` rows: what
    ``window_rides`` must hold once they are stored."""
    out: dict[tuple[int, int, int, int], tuple[set[int], set[int]]] = {}
    for p in presence_rows.tolist():
        res, cell, window_s, start_ms, ride, day, *_ = p
        rides, days = out.setdefault((res, window_s, cell, start_ms), (set(), set()))
        rides.add(ride)
        days.add(day)
    return {k: (len(rides), sorted(days)) for k, (rides, days) in out.items()}


def stored_ride_counts(conn: psycopg.Connection[Any]) -> RideCounts:
    """What the writer keeps in ``window_rides``, keyed as :func:`ride_counts`."""
    rows = conn.execute(
        "SELECT resolution, window_s, cell, (extract(epoch FROM window_start) * 1000)::bigint,"
        " rides, days FROM window_rides"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in rows}


def presence_ride_counts(conn: psycopg.Connection[Any]) -> RideCounts:
    """Distinct rides and days counted from the stored ``window_presence`` rows."""
    rows = conn.execute(
        "SELECT resolution, window_s, cell, (extract(epoch FROM window_start) * 1000)::bigint,"
        " count(DISTINCT ride_id)::integer, array_agg(DISTINCT day ORDER BY day)"
        " FROM window_presence GROUP BY 1, 2, 3, 4"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in rows}


#: (resolution, window_s, cell, window_start_ms, ride_id) -> (readings, noise energy)
RideShares = dict[tuple[int, int, int, int, int], tuple[int, float]]


def ride_shares(presence_rows: np.ndarray) -> RideShares:
    """Each ride's readings and noise energy per cell-window of ``PRESENCE_DTYPE`` rows."""
    out: dict[tuple[int, int, int, int, int], tuple[int, float]] = {}
    for p in presence_rows:
        key = (
            int(p["resolution"]),
            int(p["window_s"]),
            int(p["cell"]),
            int(p["window_start_ms"]),
            int(p["ride_id"]),
        )
        readings, energy = out.get(key, (0, 0.0))
        out[key] = (readings + int(p["readings"]), energy + float(p["noise_energy"]))
    return out


def stored_ride_shares(conn: psycopg.Connection[Any]) -> RideShares:
    """What ``window_presence`` holds, keyed as :func:`ride_shares`."""
    rows = conn.execute(
        "SELECT resolution, window_s, cell, (extract(epoch FROM window_start) * 1000)::bigint,"
        " ride_id, sum(readings)::integer, sum(noise_energy) FROM window_presence"
        " GROUP BY 1, 2, 3, 4, 5"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3], r[4]): (r[5], r[6]) for r in rows}


def assert_ride_shares_equal(stored: RideShares, expected: RideShares) -> None:
    assert stored.keys() == expected.keys()
    for key, (readings, energy) in expected.items():
        assert stored[key][0] == readings, key
        assert stored[key][1] == pytest.approx(energy, rel=1e-9), key


def stored_partials(conn: psycopg.Connection[Any]) -> dict[tuple[int, ...], tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT metric, resolution, cell, window_s,"
        " (extract(epoch FROM window_start) * 1000)::bigint,"
        " n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist FROM window_partials"
    ).fetchall()
    return {tuple(r[:5]): tuple(r[5:]) for r in rows}


def assert_partials_equal(conn: psycopg.Connection[Any], expected: np.ndarray) -> None:
    stored = stored_partials(conn)
    assert len(stored) == len(expected)
    for p in expected:
        key = (
            int(p["metric"]),
            int(p["resolution"]),
            int(p["cell"]),
            int(p["window_s"]),
            int(p["window_start_ms"]),
        )
        n, s, ss, lo, hi, energy, duration, lamax, hist = stored[key]
        assert n == p["n"]
        assert s == pytest.approx(p["sum"], rel=1e-9)
        assert ss == pytest.approx(p["sumsq"], rel=1e-9)
        assert (lo, hi) == (p["min"], p["max"])
        assert energy == pytest.approx(p["energy"], rel=1e-9)
        assert duration == pytest.approx(p["duration_s"], rel=1e-9)
        if np.isnan(p["lamax_db"]):
            assert lamax is None
        else:
            assert lamax == p["lamax_db"]
        assert hist == p["hist"].tolist()


def assert_aggregates_of(
    conn: psycopg.Connection[Any],
    everything: np.ndarray,
    aggregate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """The aggregate tables hold exactly the all-at-once aggregation of ``everything``
    (by ``aggregate``; :class:`ReferenceAggregate` if None): partials, ride counts and
    shares."""
    partials, expected = (aggregate or ReferenceAggregate())(everything)
    assert_partials_equal(conn, partials)
    assert stored_ride_counts(conn) == ride_counts(expected)
    assert_ride_shares_equal(stored_ride_shares(conn), ride_shares(expected))


def cell_windows_of(partials: np.ndarray) -> int:
    """How many cell-windows (rows of ``cell_windows``) the partials fall in."""
    return len(np.unique(partials[["resolution", "cell", "window_s", "window_start_ms"]]))


#: Every table the writer touches.
TABLES = ("readings", "cell_windows", "window_presence", "window_rides", "h3_cells")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the writer touches, in a fixed order."""
    out = {}
    for table in TABLES:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()  # type: ignore[call-overload]
        out[table] = sorted(rows, key=repr)
    return out
