"""Admission: MQTT messages in, authenticated readings, rejects and status updates out.

Runtime-agnostic and free of I/O: the MQTT consumer (``ingest.consumer``) hands
the result to its batch handler, which stores it (the embedded runtime) or
produces it to Kafka (the distributed one). Every message ends in exactly one
place: readings, a reject, or a status update. The result's types
(:class:`Admitted` and its parts) live in ``stream.core.admitted``, where both
sides can import them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from firmware_protocol import (
    RemoteProtocolError,
    decode_readings_many,
    decode_status,
    peek_header,
)
from firmware_protocol.envelope import open_frame
from firmware_protocol.readings import READING_DTYPE
from ingest.exceptions import TopicError
from ingest.keys import KeyLookup, KitKey
from ingest.limits import MAX_PAYLOAD_BYTES
from ingest.mqtt import InboundMessage
from ingest.topics import TopicKind, TopicLayout
from ingest.validation import AdmissionRules, IngestReject, check_readings
from stream.core.admitted import Admitted, RejectedFrame, StatusUpdate

__all__ = ["Admitted", "RejectedFrame", "StatusUpdate", "admit", "kits_named"]


def kits_named(messages: Sequence[InboundMessage], layout: TopicLayout) -> dict[int, int]:
    """Each kit id the messages name (in their topic, or a frame's header) with when the
    latest of them arrived: what the key cache confirms before :func:`admit` looks up."""
    latest: dict[int, int] = {}
    for message in messages:
        try:
            kit_topic = layout.parse(message.topic)
        except TopicError:
            continue
        named = [kit_topic.kit_id]
        if kit_topic.kind is TopicKind.UP:
            with contextlib.suppress(RemoteProtocolError):
                named.append(peek_header(message.payload).kit_id)
        for kit_id in named:
            latest[kit_id] = max(latest.get(kit_id, message.received_ms), message.received_ms)
    return latest


def admit(
    messages: Sequence[InboundMessage], layout: TopicLayout, keys: KeyLookup, rules: AdmissionRules
) -> Admitted:
    result = Admitted(np.empty(0, READING_DTYPE), np.empty(0, np.int64))
    frames: list[tuple[InboundMessage, KitKey]] = []
    for message in messages:
        try:
            kit_topic = layout.parse(message.topic)
        except TopicError as exc:
            result.rejects.append(_reject(message, None, IngestReject.BAD_TOPIC, str(exc)))
            continue
        if message.truncated_from is not None:
            result.rejects.append(
                _reject(
                    message,
                    kit_topic.kit_id,
                    IngestReject.TOO_LARGE,
                    f"payload of {message.truncated_from} bytes; no frame is larger than "
                    f"{MAX_PAYLOAD_BYTES} (the first {len(message.payload)} kept)",
                )
            )
            continue
        if kit_topic.kind is TopicKind.STATUS:
            _admit_status(message, kit_topic.kit_id, keys, result)
            continue
        kit = _frame_sender(message, kit_topic.kit_id, keys, result)
        if kit is not None:
            frames.append((message, kit))
    # Authenticate and decode the batch's frames in one numpy pass (per-frame decoding
    # costs a fixed ~70 µs a frame: most of ingest's CPU on 10-reading frames).
    secrets = {kit.kit_id: kit.key for _, kit in frames}
    decoded = decode_readings_many([m.payload for m, _ in frames], secrets.get)
    # The reading rules, likewise, over every decoded reading at once (each reading
    # against its own frame's arrival time); only a frame that loses readings is
    # looked at on its own, to record why.
    per_frame = np.diff(decoded.starts)
    received_ms = np.repeat(np.array([m.received_ms for m, _ in frames], dtype=np.int64), per_frame)
    keep = check_readings(decoded.readings, received_ms, rules).keep
    kept = np.bincount(
        np.repeat(np.arange(len(frames)), per_frame), weights=keep, minlength=len(frames)
    )
    for i, (message, kit) in enumerate(frames):
        error = decoded.errors.get(i)
        if error is not None:
            result.rejects.append(_reject(message, kit.kit_id, str(error.reason), str(error)))
            continue
        if kept[i] < per_frame[i]:
            _checked(message, kit.kit_id, decoded.frame_readings(i), rules, result)
        if kept[i]:
            result.frames_accepted[kit.kit_id] += 1
    if keep.any():
        result.readings = without_unfixed_positions(decoded.readings[keep])
        result.received_ms = received_ms[keep]
    return result


def without_unfixed_positions(readings: np.ndarray) -> np.ndarray:
    """``readings`` with the position of every reading without a GNSS fix removed.

    docs/protocol.md §4.2: with ``gnss_fix = 0`` receivers ignore any position; a kit
    may send its last known one, often where the ride began or stopped. Removed here,
    before anything is stored or produced to Kafka, it cannot reach the raw readings,
    the held readings, the zone check's memory or any export (docs/privacy.md).
    """
    unfixed = readings["gnss_fix"] == 0
    if unfixed.any():
        readings = readings.copy()
        readings["lat_deg"][unfixed] = np.nan
        readings["lon_deg"][unfixed] = np.nan
    return readings


def _frame_sender(
    message: InboundMessage, topic_kit: int, keys: KeyLookup, result: Admitted
) -> KitKey | None:
    """The registered, active kit a frame says it is from, if it matches its topic."""
    try:
        header = peek_header(message.payload)
    except RemoteProtocolError as exc:
        result.rejects.append(_reject(message, topic_kit, str(exc.reason), str(exc)))
        return None
    if header.kit_id != topic_kit:
        result.rejects.append(_mismatch(message, header.kit_id, topic_kit, keys))
        return None
    kit = keys(header.kit_id)
    if kit is None:
        result.rejects.append(
            _reject(
                message,
                header.kit_id,
                IngestReject.UNKNOWN_KIT,
                f"kit {header.kit_id} is not registered",
            )
        )
        return None
    if not kit.active:
        result.rejects.append(
            _reject(
                message,
                header.kit_id,
                IngestReject.REVOKED_KIT,
                f"kit {header.kit_id} has been revoked",
            )
        )
        return None
    return kit


def _mismatch(
    message: InboundMessage, claimed: int, topic_kit: int, keys: KeyLookup
) -> RejectedFrame:
    """A frame on one kit's topic that says it is from another, filed under its sender.

    The topic and the frame's MAC are the two proofs of a sender. A frame the claimed
    kit's key authenticates was sealed by that kit (or with its key): filed under it.
    Otherwise the claim proves nothing, and the topic is what the broker vouches for
    (its ACL lets a kit publish on its own topics only, docs/deployment.md): filed
    under the topic's kit. Either way the row keeps the topic, and the detail names
    both kits, so neither is lost (docs/privacy.md, "Threat model").
    """
    detail = f"frame says kit {claimed}, topic says kit {topic_kit}"
    kit = keys(claimed)
    if kit is not None:
        try:
            open_frame(message.payload, kit.key)
        except RemoteProtocolError:
            pass
        else:
            return _reject(
                message,
                claimed,
                IngestReject.TOPIC_MISMATCH,
                f"{detail}; sealed with {claimed}'s key",
            )
    return _reject(
        message,
        topic_kit,
        IngestReject.TOPIC_MISMATCH,
        f"{detail}; not sealed with {claimed}'s key",
    )


def _checked(
    message: InboundMessage,
    kit_id: int,
    decoded: np.ndarray,
    rules: AdmissionRules,
    result: Admitted,
) -> None:
    """Record why a frame's readings that fail the reading rules were dropped."""
    verdict = check_readings(decoded, message.received_ms, rules)
    if verdict.dropped == 0:
        return
    if not verdict.keep.any():
        result.rejects.append(
            _reject(
                message, kit_id, verdict.main_reason(), f"every reading failed: {verdict.summary()}"
            )
        )
        return
    result.rejects.append(
        _reject(
            message,
            kit_id,
            f"partial:{verdict.main_reason()}",
            f"kept {int(verdict.keep.sum())} of {len(verdict.keep)} readings; "
            f"dropped {verdict.summary()}",
        )
    )


def _admit_status(
    message: InboundMessage, topic_kit: int, keys: KeyLookup, result: Admitted
) -> None:
    if not message.payload:
        return  # a retained status being cleared
    try:
        status = decode_status(message.payload)
    except RemoteProtocolError as exc:
        result.rejects.append(_reject(message, topic_kit, IngestReject.BAD_STATUS, str(exc)))
        return
    if status.kit_id != topic_kit:
        # A status is accepted only from its own kit: one naming another kit is refused,
        # filed under the kit it claims to be from, like a frame's.
        result.rejects.append(
            # A status carries no MAC: the topic, which the broker's ACL vouches for,
            # names its sender.
            _reject(
                message,
                topic_kit,
                IngestReject.TOPIC_MISMATCH,
                f"status says kit {status.kit_id}, topic says kit {topic_kit}",
            )
        )
        return
    kit = keys(topic_kit)
    if kit is None or not kit.active:
        reason = IngestReject.UNKNOWN_KIT if kit is None else IngestReject.REVOKED_KIT
        result.rejects.append(
            _reject(message, topic_kit, reason, "status from a kit we do not accept")
        )
        return
    result.statuses.append(StatusUpdate(topic_kit, status, message.received_ms))


def _reject(message: InboundMessage, kit_id: int | None, reason: str, detail: str) -> RejectedFrame:
    return RejectedFrame(
        message.topic, message.payload, kit_id, str(reason), detail, message.received_ms
    )
