"""What admission hands on, and what handling a batch of it came to.

The record types that pass between the MQTT side (``ingest``: decode,
authenticate, validate) and the handlers that make a batch durable (the
database handler in ``stream.embedded``, the Kafka handler in
``stream.faust_app.ingest``). They live here, below both, so that neither side
imports the other. Pure: numpy and the wire format's types.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_protocol import StatusMessage
from stream.core.privacy import Zone, payload_in_zones


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    topic: str
    payload: bytes
    kit_id: int | None
    reason: str
    detail: str
    received_ms: int


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    kit_id: int
    status: StatusMessage
    received_ms: int


@dataclass(slots=True)
class Admitted:
    """What one batch of messages turned into."""

    readings: np.ndarray  # READING_DTYPE, every accepted reading of the batch
    received_ms: np.ndarray  # int64, when the frame of each reading arrived
    rejects: list[RejectedFrame] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    frames_accepted: Counter[int] = field(default_factory=Counter)

    @property
    def frames_rejected(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejects if not r.reason.startswith("partial:"))

    @classmethod
    def joined(cls, parts: list[Admitted]) -> Admitted:
        """Consecutive admitted batches as one, in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.readings for p in parts]),
            np.concatenate([p.received_ms for p in parts]),
            rejects=[r for p in parts for r in p.rejects],
            statuses=[u for p in parts for u in p.statuses],
            frames_accepted=sum((p.frames_accepted for p in parts), Counter()),
        )


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one batch came to once it was durably handled (stored, or handed to Kafka)."""

    admitted: Admitted
    inserted: int
    duplicates: int
    partials_merged: int
    rejects: int
    #: End-of-ride trimming: readings waiting in the holding table after this batch
    #: (of this batch's kits), and readings dropped as the last minutes of a ride.
    held: int = 0
    trimmed_end: int = 0


def withhold_zone_payloads(admitted: Admitted, zones: tuple[Zone, ...]) -> None:
    """Rejected frames keep their bytes for diagnosis, except a frame with a position in a
    privacy zone: its reject row keeps the reason and an empty payload (docs/design.md
    decision 4)."""
    for i, reject in enumerate(admitted.rejects):
        if payload_in_zones(reject.payload, zones):
            admitted.rejects[i] = dataclasses.replace(
                reject,
                payload=b"",
                detail=f"{reject.detail}; payload withheld: a position is in a privacy zone",
            )
