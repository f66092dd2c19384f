"""The bytes that travel between the distributed runtime's processes.

Two envelopes, both a 4-byte magic, a little-endian uint32 row count, then the
rows of a fixed numpy dtype exactly as numpy lays them out (every field of the
dtypes has an explicit byte order, so the bytes are the same on any machine):

* ``BSR1`` on ``bikesense.readings`` (ingest → qa agent): ``READING_DTYPE``
  rows, then one int64 ``received_ms`` per row (a message may join the readings
  of several frames of one kit, each with its own arrival time);
* ``BSE1`` on ``bikesense.enriched`` (qa agent → store agent): ``ENRICHED_DTYPE``
  rows, ``received_ms`` being one of its fields.

A magic names the layout: a change of dtype gets a new magic, so a worker of an
older release refuses what it cannot read instead of misreading it.

The per-kit value of the faust table is compact JSON with a version field:
readable when debugging a changelog topic, and tolerant of float values that
are NaN (written as null). Version 2 is a :class:`~stream.faust_app.kitlog.KitStateLog`,
the kit's states by readings offset, one line each after a header::

    {"v":2,"kit":42}
    17 [[[ride_id,boot_id,start_ms,end_ms],...],{qa}]
    23 [...]

(lines, so that the qa agent parses only the state it starts from). Version 1,
one :class:`~stream.core.state.KitState` (``{"v":1,"kit":…,"rides":…,"qa":…}``),
is what releases before it wrote; it is read as that one state at an unknown
offset.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from firmware_protocol.readings import READING_DTYPE
from stream.core.batch import ENRICHED_DTYPE
from stream.core.state import KitState, Position, QaMemory, RideSpan, SensorRun
from stream.faust_app.exceptions import EnvelopeError
from stream.faust_app.kitlog import UNKNOWN_OFFSET, KitStateLog

READINGS_MAGIC = b"BSR1"
ENRICHED_MAGIC = b"BSE1"
KIT_STATE_VERSION = 1
KIT_LOG_VERSION = 2

_T = TypeVar("_T")

_HEADER = struct.Struct("<4sI")
_RECEIVED_DTYPE = np.dtype("<i8")


def _check_dtype(rows: np.ndarray, dtype: np.dtype[Any], what: str) -> None:
    if not isinstance(rows, np.ndarray) or rows.ndim != 1 or rows.dtype != dtype:
        got = rows.dtype if isinstance(rows, np.ndarray) else type(rows).__name__
        msg = f"{what} must be a 1-D array of {what.upper()}_DTYPE (got {got})"
        raise EnvelopeError(msg)


def encode_readings(readings: np.ndarray, received_ms: np.ndarray) -> bytes:
    """``READING_DTYPE`` rows and the arrival time of each, as one message value."""
    _check_dtype(readings, READING_DTYPE, "reading")
    received = np.ascontiguousarray(received_ms, dtype=_RECEIVED_DTYPE)
    if received.shape != readings.shape:
        msg = f"{len(readings)} readings but {received.size} arrival times"
        raise EnvelopeError(msg)
    return (
        _HEADER.pack(READINGS_MAGIC, len(readings))
        + np.ascontiguousarray(readings).tobytes()
        + received.tobytes()
    )


def decode_readings(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The readings (``READING_DTYPE``) and their ``received_ms`` (int64) of one message."""
    n = _read_header(payload, READINGS_MAGIC, READING_DTYPE.itemsize + _RECEIVED_DTYPE.itemsize)
    rows_end = _HEADER.size + n * READING_DTYPE.itemsize
    readings = np.frombuffer(payload, READING_DTYPE, n, _HEADER.size).copy()
    received = np.frombuffer(payload, _RECEIVED_DTYPE, n, rows_end).copy()
    return readings, received


def encode_enriched(enriched: np.ndarray) -> bytes:
    _check_dtype(enriched, ENRICHED_DTYPE, "enriched")
    return _HEADER.pack(ENRICHED_MAGIC, len(enriched)) + np.ascontiguousarray(enriched).tobytes()


def decode_enriched(payload: bytes) -> np.ndarray:
    n = _read_header(payload, ENRICHED_MAGIC, ENRICHED_DTYPE.itemsize)
    return np.frombuffer(payload, ENRICHED_DTYPE, n, _HEADER.size).copy()


def _read_header(payload: bytes, magic: bytes, row_bytes: int) -> int:
    if len(payload) < _HEADER.size:
        msg = f"envelope of {len(payload)} bytes is shorter than its {_HEADER.size}-byte header"
        raise EnvelopeError(msg)
    found, n = _HEADER.unpack_from(payload)
    if found != magic:
        msg = f"envelope magic is {found!r}, expected {magic!r} (another layout or release?)"
        raise EnvelopeError(msg)
    expected = _HEADER.size + n * row_bytes
    if len(payload) != expected:
        msg = f"{magic.decode()} envelope of {n} rows must be {expected} bytes (got {len(payload)})"
        raise EnvelopeError(msg)
    return int(n)


# --- message keys -----------------------------------------------------------------------


def kit_key(kit_id: int) -> bytes:
    """Key of ``bikesense.readings`` and of the kit-state table: the kit id in decimal."""
    return str(int(kit_id)).encode()


def route_key(coarse_cell: int, kit_id: int) -> bytes:
    """Key of ``bikesense.enriched``: the coarse H3 cell in decimal, so that one worker
    merges every partial of a cell; readings without a place go by kit (``k<kit>``)."""
    return str(int(coarse_cell)).encode() if coarse_cell else f"k{int(kit_id)}".encode()


# --- kit state ----------------------------------------------------------------------------


def encode_kit_state(state: KitState) -> bytes:
    """One state, version 1 (what the table held before it held a :class:`KitStateLog`)."""
    rides = [[r.ride_id, r.boot_id, r.start_ms, r.end_ms] for r in state.rides]
    doc = {"v": KIT_STATE_VERSION, "kit": state.kit_id, "rides": rides, "qa": _qa_doc(state.qa)}
    return _dumps(doc)


def decode_kit_state(blob: bytes) -> KitState:
    return _decode(blob, {KIT_STATE_VERSION}, lambda doc: _state_from(int(doc["kit"]), doc))


def encode_kit_log(log: KitStateLog[KitState]) -> bytes:
    """The table's value for a kit: its states by readings offset, version 2."""
    return encode_kit_log_docs(
        KitStateLog(log.kit_id, tuple((at, state_doc(state)) for at, state in log.entries))
    )


def decode_kit_log(blob: bytes) -> KitStateLog[KitState]:
    """A table value of either version; version 1 as one state at an unknown offset."""
    log = decode_kit_log_docs(blob)
    return KitStateLog(
        log.kit_id, tuple((at, state_from_doc(log.kit_id, doc)) for at, doc in log.entries)
    )


#: A state as the table's value holds it: the JSON text of ``[rides, qa]``. The qa agent
#: keeps the entries it does not start from as text: parsing and writing every entry of a
#: kit's value to handle one message would cost more than the message.
StateDoc = bytes


def state_doc(state: KitState) -> StateDoc:
    rides = [[r.ride_id, r.boot_id, r.start_ms, r.end_ms] for r in state.rides]
    return json.dumps([rides, _qa_doc(state.qa)], separators=(",", ":"), allow_nan=False).encode()


def state_from_doc(kit_id: int, doc: StateDoc) -> KitState:
    try:
        rides, qa = json.loads(doc)
        return _state_from(kit_id, {"rides": rides, "qa": qa})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        msg = f"kit state is not valid: {exc}"
        raise EnvelopeError(msg) from exc


def encode_kit_log_docs(log: KitStateLog[StateDoc]) -> bytes:
    """Version 2, one line per entry after a header: ``{"v":2,"kit":K}``, then
    ``<offset> [rides, qa]`` lines (compact JSON has no line breaks)."""
    header = _dumps({"v": KIT_LOG_VERSION, "kit": log.kit_id})
    return b"\n".join([header, *(b"%d %s" % (at, doc) for at, doc in log.entries)])


def decode_kit_log_docs(blob: bytes) -> KitStateLog[StateDoc]:
    """:func:`decode_kit_log` with the states left as text, parsed when one is used."""
    header, *lines = blob.split(b"\n")

    def build(doc: dict[str, Any]) -> KitStateLog[StateDoc]:
        kit = int(doc["kit"])
        if doc["v"] == KIT_STATE_VERSION:
            rides, qa = doc["rides"], doc["qa"]
            again = json.dumps([rides, qa], separators=(",", ":"), allow_nan=False).encode()
            return KitStateLog(kit, ((UNKNOWN_OFFSET, again),))
        entries = []
        for line in lines:
            offset, _, state = line.partition(b" ")
            if not state.startswith(b"[") or not state.endswith(b"]"):
                msg = f"kit state is not valid: entry {line[:40]!r}"
                raise EnvelopeError(msg)
            entries.append((int(offset), state))
        return KitStateLog(kit, tuple(entries))

    return _decode(header, {KIT_STATE_VERSION, KIT_LOG_VERSION}, build)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _decode(blob: bytes, versions: set[int], build: Callable[[dict[str, Any]], _T]) -> _T:
    try:
        doc = json.loads(blob)
        if doc.get("v") not in versions:
            expected = " or ".join(str(v) for v in sorted(versions))
            msg = f"kit state version {doc.get('v')!r}, expected {expected}"
            raise EnvelopeError(msg)
        return build(doc)
    except EnvelopeError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        msg = f"kit state is not valid: {exc}"
        raise EnvelopeError(msg) from exc


def _state_from(kit_id: int, doc: dict[str, Any]) -> KitState:
    return KitState(
        kit_id=kit_id,
        rides=tuple(RideSpan(int(a), int(b), int(c), int(d)) for a, b, c, d in doc["rides"]),
        qa=_qa_from(doc["qa"]),
    )


def _float_out(value: float) -> float | str | None:
    # JSON has no NaN or infinities: NaN (an absent sensor value) is null, infinities strings.
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _float_in(value: float | str | None) -> float:
    return math.nan if value is None else float(value)


def _run_doc(run: SensorRun | None) -> list[Any] | None:
    if run is None:
        return None
    return [[_float_out(v) for v in run.values], run.start_ms, run.count]


def _run_from(doc: list[Any] | None) -> SensorRun | None:
    if doc is None:
        return None
    values, start_ms, count = doc
    return SensorRun(tuple(_float_in(v) for v in values), int(start_ms), int(count))


def _qa_doc(qa: QaMemory | None) -> dict[str, Any] | None:
    if qa is None:
        return None
    anchor = qa.anchor
    return {
        "ride": qa.ride_id,
        "boot": qa.boot_id,
        "last": qa.last_ts_ms,
        "boot_start": qa.boot_start_ms,
        "anchor": None
        if anchor is None
        else [_float_out(anchor.lat_deg), _float_out(anchor.lon_deg), anchor.ts_ms],
        "rejecting": qa.rejecting_since_ms,
        "pm": _run_doc(qa.pm_run),
        "no2": _run_doc(qa.no2_run),
        "noise": _run_doc(qa.noise_run),
    }


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _qa_from(doc: dict[str, Any] | None) -> QaMemory | None:
    if doc is None:
        return None
    anchor = doc["anchor"]
    return QaMemory(
        ride_id=int(doc["ride"]),
        boot_id=int(doc["boot"]),
        last_ts_ms=int(doc["last"]),
        boot_start_ms=_opt_int(doc["boot_start"]),
        anchor=None
        if anchor is None
        else Position(_float_in(anchor[0]), _float_in(anchor[1]), int(anchor[2])),
        rejecting_since_ms=_opt_int(doc["rejecting"]),
        pm_run=_run_from(doc["pm"]),
        no2_run=_run_from(doc["no2"]),
        noise_run=_run_from(doc["noise"]),
    )
