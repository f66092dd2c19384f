"""What the agents do with one event or one batch: plain functions, no faust.

The agents in :mod:`stream.faust_app.app` only move bytes between Kafka, the
kit-state table and these functions, so the logic is tested without a broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from firmware_protocol.readings import READING_DTYPE
from stream.core.admitted import Admitted
from stream.core.batch import ENRICHED_DTYPE
from stream.core.binning import NO_CELL, parent_cells
from stream.core.process import CoreConfig, process_batch
from stream.faust_app.codec import (
    StateDoc,
    decode_enriched,
    decode_kit_log_docs,
    decode_readings,
    encode_enriched,
    encode_kit_log_docs,
    kit_key,
    route_key,
    state_doc,
    state_from_doc,
)
from stream.faust_app.exceptions import EnvelopeError
from stream.faust_app.kitlog import KitStateLog
from stream.sink import PostgresSink, WriteOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QaOutcome:
    """What the qa agent did with one message of ``bikesense.readings``; the agent yields it."""

    kit_id: int
    readings: int
    #: The kit's new table value (its states by readings offset, encoded); None when
    #: the message left the kit's state as it was (no readings, or privacy zones only).
    state: bytes | None = field(repr=False)
    #: ``(key, value)`` messages for ``bikesense.enriched``, one per coarse cell.
    forwards: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    #: False when the message was processed again from below the oldest state the table
    #: kept for its kit (stream/faust_app/kitlog.py): it ran with that state instead.
    state_reached: bool = True


def qa_step(
    payload: bytes,
    key: bytes,
    state: bytes | None,
    config: CoreConfig,
    routing_resolution: int,
    *,
    offset: int,
    committed: int | None = None,
) -> QaOutcome:
    """Run the stream core on one kit's readings, with that kit's state from the table.

    ``key`` is the message key: the kit every reading must belong to, since the
    state is kept in the table partition of that key. ``state`` is the table's value
    for the kit, ``offset`` the message's offset on the readings topic and
    ``committed`` its partition's committed offset, if known: the readings run with
    the state the kit's messages below ``offset`` left, even when this message (and
    some after it) were processed before (stream/faust_app/kitlog.py).
    """
    readings, received_ms = decode_readings(payload)
    kits = np.unique(readings["kit_id"]).tolist()
    if len(kits) > 1 or (kits and kit_key(kits[0]) != key):
        msg = f"a message keyed {key!r} must hold readings of that kit alone (found kits {kits})"
        raise EnvelopeError(msg)
    if not kits:
        return QaOutcome(kit_id=-1, readings=0, state=None, forwards=())
    kit_id = int(kits[0])
    log: KitStateLog[StateDoc] = (
        decode_kit_log_docs(state) if state is not None else KitStateLog(kit_id)
    )
    before = log.before(offset)
    states = {kit_id: state_from_doc(kit_id, before)} if before is not None else {}
    # As the embedded runtime does: QA judges "too old" / "far future" against the
    # newest arrival, and each row then keeps the arrival time of its own frame.
    processed = process_batch(readings, int(received_ms.max()), states, config)
    processed.enriched["received_ms"] = received_ms
    # Readings in a privacy zone or a ride's first minutes go no further (stream.core.privacy);
    # a message of zone readings alone leaves the kit's state as it was.
    new_state = processed.updated.get(kit_id)
    return QaOutcome(
        kit_id=kit_id,
        readings=len(readings),
        state=None
        if new_state is None
        else encode_kit_log_docs(log.after(offset, state_doc(new_state), committed=committed)),
        forwards=tuple(route_by_cell(processed.to_store(), routing_resolution)),
        state_reached=log.reaches(offset),
    )


def route_by_cell(enriched: np.ndarray, resolution: int) -> list[tuple[bytes, bytes]]:
    """Split enriched rows into messages keyed by their parent cell at ``resolution``.

    Rows without a cell (no fix, invalid position) are still stored as raw
    readings; they are keyed by kit. Rows keep their order within a message.
    """
    if not len(enriched):
        return []
    parents = parent_cells(enriched["cell"], resolution)
    kits = np.where(parents == NO_CELL, enriched["kit_id"].astype(np.int64), 0)
    groups, inverse = np.unique(np.stack([parents, kits], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(groups) + 1))
    return [
        (route_key(int(cell), int(kit)), encode_enriched(enriched[order[lo:hi]]))
        for (cell, kit), lo, hi in zip(
            groups.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True
        )
    ]


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What the store agent did with one batch of ``bikesense.enriched``; the agent yields it."""

    messages: int
    readings: int
    inserted: int
    duplicates: int
    partials_merged: int
    #: Messages that could not be decoded (logged, then skipped).
    unreadable: int


_NO_ADMISSION = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))


def merge_enriched(payloads: Sequence[bytes]) -> tuple[np.ndarray, int]:
    """The rows of every readable message, concatenated, and how many messages were not."""
    parts: list[np.ndarray] = []
    unreadable = 0
    for payload in payloads:
        try:
            parts.append(decode_enriched(payload))
        except EnvelopeError as exc:
            unreadable += 1
            log.error("skipping an unreadable message on the enriched topic: %s", exc)
    if not parts:
        return np.empty(0, ENRICHED_DTYPE), unreadable
    return np.concatenate(parts), unreadable


def write_enriched(sink: PostgresSink, enriched: np.ndarray) -> WriteOutcome:
    """One transaction, as the embedded runtime's: readings new by identity, their partials,
    kits' last-seen times and a live-update notification (rejects and statuses were
    written by ingest)."""
    return sink.write(_NO_ADMISSION, enriched)


async def store_batch(
    sink: PostgresSink, payloads: Sequence[bytes], *, retry_min_s: float, retry_max_s: float
) -> StoreOutcome:
    """Write a batch of enriched messages; while the database fails, wait and try again.

    Never gives up on a batch: the agent's events are acknowledged only after
    this returns, so a database that is away stalls the stream (Kafka keeps the
    messages) instead of losing them. A batch that fails for another reason
    (say a constraint the writer did not expect) stalls it too, logged as an
    error every time, until an operator looks.
    """
    enriched, unreadable = merge_enriched(payloads)
    if not len(enriched):
        return StoreOutcome(len(payloads), 0, 0, 0, 0, unreadable)
    delay = retry_min_s
    while True:
        try:
            outcome = await asyncio.to_thread(write_enriched, sink, enriched)
        except psycopg.OperationalError as exc:
            log.warning(
                "database unavailable (%s); batch of %d rows kept, retrying in %.1f s",
                exc,
                len(enriched),
                delay,
            )
        except psycopg.Error as exc:
            log.error(
                "batch of %d rows failed (%s: %s); retrying in %.1f s",
                len(enriched),
                type(exc).__name__,
                exc,
                delay,
            )
        else:
            return StoreOutcome(
                messages=len(payloads),
                readings=len(enriched),
                inserted=outcome.inserted,
                duplicates=outcome.duplicates,
                partials_merged=outcome.partials_merged,
                unreadable=unreadable,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max_s)
