"""The one entry point both runtimes call: decoded readings in, enriched readings out.

:func:`process_batch` is pure: it takes the kit states from before the batch
and returns new ones, never mutating anything it was given. It does *not*
aggregate: storage inserts the enriched rows with their identity unique and
calls :func:`aggregate_new_rows` on exactly the rows that were new in its
transaction, which is what makes redelivered frames harmless (docs/design.md
decision 2).

Privacy (docs/design.md decision 4, :mod:`stream.core.privacy`): readings inside a
privacy zone are set aside before anything else looks at them (they start no
ride and leave nothing in the kit state), and readings in the first minutes of
a ride are marked too; :attr:`ProcessedBatch.withheld` tells the runtime which
rows it must not store, :meth:`ProcessedBatch.to_store` gives the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bikesense import defaults
from firmware_protocol.readings import READING_DTYPE
from stream.core.aggregate import aggregate
from stream.core.batch import enrich, pack_keys
from stream.core.binning import NO_CELL, cells_at, check_resolutions
from stream.core.exceptions import InvalidBatchError
from stream.core.kitqa import apply_qa
from stream.core.policy import DEFAULT_POLICY, PublicationPolicy
from stream.core.privacy import PrivacyConfig, in_ride_start, in_zones
from stream.core.qa import QaConfig, QaFlag
from stream.core.rides import RideConfig, assign_rides
from stream.core.state import KitState, KitStates
from stream.core.windows import check_window_sizes, zone

#: Default H3 resolutions and window sizes (bikesense.defaults, which settings use too).
DEFAULT_RESOLUTIONS = defaults.H3_RESOLUTIONS
DEFAULT_WINDOW_SIZES_S = defaults.WINDOW_SIZES_S

#: Readings with these flags have no place to bin: their cell is left 0.
_UNPLACEABLE = np.uint32(int(QaFlag.NO_FIX | QaFlag.INVALID_POSITION | QaFlag.NULL_ISLAND))


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything the core needs to know; built by the runtime from its settings."""

    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    window_sizes_s: tuple[int, ...] = DEFAULT_WINDOW_SIZES_S
    qa: QaConfig = field(default_factory=QaConfig)
    rides: RideConfig = field(default_factory=RideConfig)
    #: Time zone of "days" (distinct days for k-anonymity, Lden periods).
    day_tz: str = defaults.DAY_TZ
    policy: PublicationPolicy = DEFAULT_POLICY
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", check_resolutions(self.resolutions))
        object.__setattr__(self, "window_sizes_s", check_window_sizes(self.window_sizes_s))
        zone(self.day_tz)

    @property
    def finest_resolution(self) -> int:
        return self.resolutions[-1]


@dataclass(frozen=True, slots=True)
class ProcessedBatch:
    """What a batch became: enriched rows (input order) and the kit states after it."""

    enriched: np.ndarray  # ENRICHED_DTYPE, one row per input reading, in input order
    states: dict[int, KitState]  # every kit: the states given, with this batch's kits updated
    updated: dict[int, KitState]  # only the kits this batch touched (for keyed state stores)
    #: True for rows that must never be stored: in a privacy zone, or in a ride's first minutes.
    withheld: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    in_zone: int = 0  # how many of the withheld rows were in a privacy zone
    trimmed: int = 0  # how many were in the first minutes of their ride

    def to_store(self) -> np.ndarray:
        """The enriched rows a runtime may store (set ``received_ms`` on ``enriched`` first)."""
        if not self.withheld.any():
            return self.enriched
        kept: np.ndarray = self.enriched[~self.withheld]
        return kept


def process_batch(
    readings: np.ndarray, received_ms: int, states: KitStates, config: CoreConfig
) -> ProcessedBatch:
    """QA flags, finest H3 cell and ride id for every reading; new kit states.

    ``readings`` are decoded readings (``READING_DTYPE``) of any kits, in any
    order; ``received_ms`` is when ingest received them.
    """
    _check_readings(readings)
    enriched = enrich(readings, int(received_ms))
    zoned = in_zones(enriched["lat_deg"], enriched["lon_deg"], config.privacy.zones)
    # Zone readings take no part: sorted last by the leading key, then cut off.
    keys = pack_keys([zoned, *(enriched[k] for k in ("kit_id", "ts_ms", "boot_id", "seq", "idx"))])
    order = np.lexsort(keys[::-1])
    order = order[: len(order) - int(np.count_nonzero(zoned))]
    batch = enriched[order]
    rides = assign_rides(batch["kit_id"], batch["boot_id"], batch["ts_ms"], states, config.rides)
    batch["ride_id"] = rides.ride_ids
    qa = apply_qa(batch, states, config.qa)
    batch["qa_flags"] = qa.flags
    placeable = (qa.flags & _UNPLACEABLE) == 0
    cells = np.full(len(batch), NO_CELL, dtype=np.int64)
    cells[placeable] = cells_at(
        batch["lat_deg"][placeable], batch["lon_deg"][placeable], config.finest_resolution
    )
    batch["cell"] = cells
    # Only these three columns changed: put back into input order, not whole rows.
    for name in ("ride_id", "qa_flags", "cell"):
        enriched[name][order] = batch[name]
    trimmed = np.zeros(len(enriched), dtype=bool)
    trimmed[order] = in_ride_start(batch["ts_ms"], batch["ride_id"], config.privacy.trim_start_s)

    updated = {
        kit: KitState(kit_id=kit, rides=spans, qa=qa.memory.get(kit))
        for kit, spans in rides.rides.items()
    }
    return ProcessedBatch(
        enriched,
        {**states, **updated},
        updated,
        zoned | trimmed,
        int(np.count_nonzero(zoned)),
        int(np.count_nonzero(trimmed)),
    )


def aggregate_new_rows(enriched: np.ndarray, config: CoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~stream.core.aggregate.aggregate` with the resolutions, windows, zone and policy
    of ``config``: what storage calls on the rows new in its transaction."""
    return aggregate(
        enriched, config.resolutions, config.window_sizes_s, config.day_tz, config.policy
    )


def _check_readings(readings: np.ndarray) -> None:
    if not isinstance(readings, np.ndarray) or readings.ndim != 1:
        msg = "process_batch needs a 1-D numpy array of readings (READING_DTYPE)"
        raise InvalidBatchError(msg)
    names = set(readings.dtype.names or ())
    missing = [f for f in READING_DTYPE.names or () if f not in names]
    if missing:
        msg = (
            "process_batch needs READING_DTYPE readings; missing fields: "
            f"{', '.join(missing)} (got dtype {readings.dtype})"
        )
        raise InvalidBatchError(msg)
