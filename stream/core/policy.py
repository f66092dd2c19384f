"""The publication policy: which QA flags keep a reading out of the published aggregates.

Raw readings are always stored with their flags (researchers get everything);
the aggregates behind the public map are built only from readings this policy
allows, metric by metric. A flag either *excludes* a reading from a metric or
only *annotates* it. docs/stream.md has the reasoning for each flag.

Whether one reading counts for a metric is a :class:`MapRule`, data rather than
code, so that the stream (numpy, :meth:`PublicationPolicy.publishable`) and the
exports (SQL, ``storage.export_columns``: a column per metric saying whether the
map counted the reading) apply one rule.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from stream.core.binning import NO_CELL
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.qa import QaFlag

#: Without a trustworthy place and time a reading cannot go into any cell or window.
PLACE_AND_TIME_FLAGS = (
    QaFlag.NO_FIX
    | QaFlag.POOR_HDOP
    | QaFlag.INVALID_POSITION
    | QaFlag.NULL_ISLAND
    | QaFlag.IMPOSSIBLE_SPEED
    | QaFlag.POSITION_JUMP
    | QaFlag.GNSS_FAULT
    | QaFlag.FAR_FUTURE
    | QaFlag.TOO_OLD
    | QaFlag.CLOCK_UNSYNCED
)

_PM_FLAGS = (
    QaFlag.WARMING_UP | QaFlag.PM_FAULT | QaFlag.PM_STUCK | QaFlag.PM_OUT_OF_RANGE | QaFlag.FOG_PM
)
_NO2_FLAGS = (
    QaFlag.WARMING_UP
    | QaFlag.NO2_WARMING_UP
    | QaFlag.NO2_FAULT
    | QaFlag.NO2_STUCK
    | QaFlag.NO2_OUT_OF_RANGE
)
_NOISE_FLAGS = (
    QaFlag.NOISE_FAULT | QaFlag.NOISE_STUCK | QaFlag.NOISE_OUT_OF_RANGE | QaFlag.BAD_INTERVAL
)
_CLIMATE_FLAGS = QaFlag.CLIMATE_OUT_OF_RANGE | QaFlag.CLIMATE_FAULT

#: Flags that exclude a reading from each metric's published aggregates.
EXCLUDING_FLAGS: Mapping[Metric, QaFlag] = MappingProxyType(
    {
        Metric.PM1: PLACE_AND_TIME_FLAGS | _PM_FLAGS,
        Metric.PM25: PLACE_AND_TIME_FLAGS | _PM_FLAGS,
        Metric.PM10: PLACE_AND_TIME_FLAGS | _PM_FLAGS,
        Metric.NO2: PLACE_AND_TIME_FLAGS | _NO2_FLAGS,
        Metric.NOISE: PLACE_AND_TIME_FLAGS | _NOISE_FLAGS,
        Metric.TEMPERATURE: PLACE_AND_TIME_FLAGS | _CLIMATE_FLAGS,
        Metric.HUMIDITY: PLACE_AND_TIME_FLAGS | _CLIMATE_FLAGS,
    }
)

#: Flags that never exclude anything: kept on the raw reading for researchers.
ANNOTATING_FLAGS = QaFlag.ALL & ~functools.reduce(operator.or_, EXCLUDING_FLAGS.values())


@dataclass(frozen=True, slots=True)
class MapRule:
    """When one reading counts for a metric in the map's aggregates: its ``value`` is
    present (not NaN), it has a cell (``cell`` is not :data:`NO_CELL`), none of the
    ``excluding`` flags is set, and every column in ``positive`` is above zero."""

    value: str  # the metric's column of the reading
    excluding: QaFlag
    positive: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PublicationPolicy:
    """Which flags exclude a reading from which metric; the default is :data:`EXCLUDING_FLAGS`."""

    excluding: Mapping[Metric, QaFlag] = field(default_factory=lambda: EXCLUDING_FLAGS)

    def excluded_by(self, metric: Metric) -> QaFlag:
        """Flags that keep a reading out of ``metric``'s aggregates (none for unknown metrics)."""
        return self.excluding.get(metric, QaFlag(0))

    def rule(self, metric: Metric) -> MapRule:
        """When a reading counts for ``metric`` on the map."""
        # Noise energy is weighted by the interval; a reading covering no time adds nothing.
        positive = ("interval_ms",) if metric is Metric.NOISE else ()
        return MapRule(METRIC_COLUMNS[metric], self.excluded_by(metric), positive)

    def publishable(self, enriched: np.ndarray, metric: Metric) -> np.ndarray:
        """Mask of readings that count for ``metric``: :meth:`rule` applied to each."""
        return self.publishable_masks(enriched, (metric,))[metric]

    def publishable_masks(
        self, enriched: np.ndarray, metrics: Iterable[Metric] = tuple(METRIC_COLUMNS)
    ) -> dict[Metric, np.ndarray]:
        """:meth:`publishable` of each of ``metrics``, the columns their rules share read
        once (a column of a structured array is read by walking every row's bytes)."""
        flags = np.ascontiguousarray(enriched["qa_flags"])
        placed = enriched["cell"] != NO_CELL
        positive: dict[str, np.ndarray] = {}
        out: dict[Metric, np.ndarray] = {}
        for metric in metrics:
            rule = self.rule(metric)
            ok: np.ndarray = ((flags & np.uint32(int(rule.excluding))) == 0) & placed
            ok &= ~np.isnan(enriched[rule.value])
            for column in rule.positive:
                if column not in positive:
                    positive[column] = enriched[column] > 0
                ok &= positive[column]
            out[metric] = ok
        return out

    def publishable_any(self, enriched: np.ndarray) -> np.ndarray:
        """Mask of readings that count for at least one metric (these make presence rows)."""
        ok = np.zeros(len(enriched), dtype=bool)
        for mask in self.publishable_masks(enriched).values():
            ok |= mask
        return ok


DEFAULT_POLICY = PublicationPolicy()
