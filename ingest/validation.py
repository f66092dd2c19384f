"""Frame- and reading-level admission rules, and why a frame or reading was refused.

Policy (docs/ingest.md): ingest drops a *reading* only when its time or place
is wrong, not merely missing — a timestamp in the far future or too old, or a
position off the globe or at (0, 0). A reading with no position at all (no
GNSS fix) keeps its sensor values: it is stored, flagged ``NO_FIX`` by the
stream core, and kept out of the map. If every reading of a frame fails, the
frame is rejected with that reason. A frame that keeps some readings is also
recorded in the rejects table (reason ``partial:<reason>``, with the dropped
indexes) so nothing disappears silently. Sensor values out of their physical
range are not dropped here: the stream core flags them (``QaFlag.OUT_OF_RANGE``)
and they stay in raw storage, excluded from published aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class IngestReject(StrEnum):
    """Why ingest refuses a frame, beyond the decoder's own ``RejectReason``."""

    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_KIT = "unknown_kit"
    REVOKED_KIT = "revoked_kit"
    FAR_FUTURE = "far_future"
    TOO_OLD = "too_old"
    BAD_POSITION = "bad_position"
    NULL_ISLAND = "null_island"
    BAD_STATUS = "bad_status"
    #: Larger than the protocol's largest frame (``ingest.limits``).
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    #: Kit clocks come from GNSS; more than this ahead of our clock is a broken clock.
    max_future_ms: int = 5 * 60 * 1000
    #: Kits buffer while offline for hours or days; a month is the longest we accept.
    max_age_ms: int = 30 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class ReadingVerdict:
    """Which readings of a frame to keep, and the reason each dropped one was dropped."""

    keep: np.ndarray  # bool mask over the frame's readings
    reasons: dict[IngestReject, np.ndarray]  # reason -> indexes of readings dropped for it

    @property
    def dropped(self) -> int:
        return int((~self.keep).sum())

    def summary(self) -> str:
        return "; ".join(f"{reason}: idx {_ranges(idx)}" for reason, idx in self.reasons.items())

    def main_reason(self) -> IngestReject:
        return max(self.reasons.items(), key=lambda item: len(item[1]))[0]


def check_readings(
    readings: np.ndarray, received_ms: int | np.ndarray, rules: AdmissionRules
) -> ReadingVerdict:
    """Apply the reading rules to readings (READING_DTYPE), vectorised: one frame's with
    its arrival time, or many frames' with each reading's frame's arrival time."""
    ts = readings["ts_ms"]
    lat = readings["lat_deg"]
    lon = readings["lon_deg"]
    checks = {
        IngestReject.FAR_FUTURE: ts > received_ms + rules.max_future_ms,
        IngestReject.TOO_OLD: ts < received_ms - rules.max_age_ms,
        # NaN is "no position" (no fix): kept. Anything else must be on the globe.
        IngestReject.BAD_POSITION: (np.isfinite(lat) != np.isfinite(lon))
        | (np.abs(lat) > 90)
        | (np.abs(lon) > 180)
        | np.isinf(lat)
        | np.isinf(lon),
        IngestReject.NULL_ISLAND: (np.abs(lat) < 1e-6) & (np.abs(lon) < 1e-6),
    }
    keep = np.ones(len(readings), dtype=bool)
    reasons: dict[IngestReject, np.ndarray] = {}
    for reason, failed in checks.items():
        bad = failed & keep  # each dropped reading is charged to its first failing rule
        if bad.any():
            reasons[reason] = np.flatnonzero(bad)
            keep &= ~bad
    return ReadingVerdict(keep, reasons)


def _ranges(indexes: np.ndarray) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"``: readable in a rejects row."""
    if len(indexes) == 0:
        return ""
    parts = []
    start = prev = int(indexes[0])
    for value in (int(i) for i in indexes[1:]):
        if value != prev + 1:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = value
        prev = value
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)
