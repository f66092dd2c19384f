"""QA checks that need a kit's history: position jumps, stuck sensors, warm-up after boot.

:func:`apply_qa` takes a batch sorted by (kit, time) and the kit states from
before it, and returns every reading's flags and each kit's new QA memory. The
history of a kit carries into a batch only where the batch continues it: same
ride and boot, not older than the newest reading already seen, and no longer
after it than :attr:`QaConfig.context_gap_s`. Late uploads are therefore checked
against their own neighbours only; the checks are causal (a reading is judged by
what came before it), so in-order data gets the same flags however it is batched.

Everything is vectorised over the batch, except the jump filter after a
suspected jump: from there to the end of that stretch the filter must compare
each position with the last *accepted* one, which is sequential by nature.
Jumps are rare, so this costs little.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream.core.exceptions import InvalidBatchError
from stream.core.qa import QaConfig, QaFlag, reading_flags
from stream.core.state import KitState, Position, QaMemory, SensorRun

_EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)

#: Positions that cannot anchor the jump filter.
_UNUSABLE_POSITION = int(
    QaFlag.NO_FIX
    | QaFlag.INVALID_POSITION
    | QaFlag.NULL_ISLAND
    | QaFlag.POOR_HDOP
    | QaFlag.GNSS_FAULT
)

_SENSORS: tuple[tuple[str, tuple[str, ...], QaFlag], ...] = (
    ("pm_run", ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3"), QaFlag.PM_STUCK),
    ("no2_run", ("no2_ugm3",), QaFlag.NO2_STUCK),
    ("noise_run", ("noise_laeq_db", "noise_lamax_db"), QaFlag.NOISE_STUCK),
)


@dataclass(frozen=True, slots=True)
class QaResult:
    flags: np.ndarray  # uint32 per reading, in the batch's (kit, time) order
    memory: dict[int, QaMemory]  # new QA memory of every kit in the batch


@dataclass(frozen=True, slots=True)
class _Segments:
    """Stretches of one kit, boot and ride without a long gap, and what they inherit."""

    starts: np.ndarray  # first reading of each segment
    ends: np.ndarray  # last reading of each segment (inclusive)
    memory: list[QaMemory | None]  # the kit memory a segment continues, else None

    def of_readings(self, values: np.ndarray) -> np.ndarray:
        """Spread one value per segment over its readings."""
        return np.repeat(values, self.ends - self.starts + 1)


def apply_qa(enriched: np.ndarray, states: Mapping[int, KitState], config: QaConfig) -> QaResult:
    """Flags and new QA memories for readings sorted by (kit, time) with rides assigned."""
    flags = reading_flags(enriched, config)
    if len(enriched) == 0:
        return QaResult(flags, {})
    kit, ts = enriched["kit_id"], enriched["ts_ms"]
    if np.any((kit[1:] < kit[:-1]) | ((kit[1:] == kit[:-1]) & (ts[1:] < ts[:-1]))):
        msg = "apply_qa needs readings sorted by (kit_id, ts_ms); process_batch sorts them"
        raise InvalidBatchError(msg)
    segs = _segments(enriched, states, config)
    boot_start = _boot_starts(enriched, segs, states)
    flags |= _warmup_flags(enriched, segs.of_readings(boot_start), config)
    runs: dict[str, list[SensorRun | None]] = {}
    for name, columns, flag in _SENSORS:
        stuck, runs[name] = _stuck(enriched, segs, name, columns, config)
        flags[stuck] |= np.uint32(int(flag))
    jumps, anchors = _jumps(enriched, flags, segs, config)
    flags[jumps] |= np.uint32(int(QaFlag.POSITION_JUMP))
    memory = _new_memory(
        enriched, states=states, segs=segs, boot_start=boot_start, runs=runs, anchors=anchors
    )
    return QaResult(flags, memory)


def _segments(enriched: np.ndarray, states: Mapping[int, KitState], config: QaConfig) -> _Segments:
    kit, boot, ride, ts = (enriched[k] for k in ("kit_id", "boot_id", "ride_id", "ts_ms"))
    cut = np.ones(len(ts), dtype=bool)
    cut[1:] = (
        (kit[1:] != kit[:-1])
        | (boot[1:] != boot[:-1])
        | (ride[1:] != ride[:-1])
        | (np.diff(ts) > config.context_gap_s * 1000)
    )
    starts = np.flatnonzero(cut)
    ends = np.append(starts[1:], len(ts)) - 1
    memory: list[QaMemory | None] = []
    taken: set[int] = set()
    for k, t, r, b in zip(
        kit[starts].tolist(),
        ts[starts].tolist(),
        ride[starts].tolist(),
        boot[starts].tolist(),
        strict=True,
    ):
        state = states.get(k)
        m = state.qa if state is not None else None
        # Only the first segment at or after the newest reading seen can continue it.
        continues = (
            m is not None
            and k not in taken
            and t >= m.last_ts_ms
            and t - m.last_ts_ms <= config.context_gap_s * 1000
            and r == m.ride_id
            and b == m.boot_id
        )
        if m is not None and t >= m.last_ts_ms:
            taken.add(k)
        memory.append(m if continues else None)
    return _Segments(starts, ends, memory)


def _boot_starts(
    enriched: np.ndarray, segs: _Segments, states: Mapping[int, KitState]
) -> np.ndarray:
    """Per segment: time of the first reading of frame 0 of its boot, or -1 if never seen."""
    first_frame = enriched["seq"] == 0
    seen: dict[tuple[int, int], int] = {}
    if first_frame.any():
        rows = enriched[first_frame]
        for k, b, t in zip(
            rows["kit_id"].tolist(), rows["boot_id"].tolist(), rows["ts_ms"].tolist(), strict=True
        ):
            seen[k, b] = min(t, seen.get((k, b), t))
    out = np.full(len(segs.starts), -1, dtype=np.int64)
    firsts = enriched[segs.starts]
    for i, key in enumerate(
        zip(firsts["kit_id"].tolist(), firsts["boot_id"].tolist(), strict=True)
    ):
        known = [seen[key]] if key in seen else []
        state = states.get(key[0])
        m = state.qa if state is not None else None
        if m is not None and m.boot_id == key[1] and m.boot_start_ms is not None:
            known.append(m.boot_start_ms)
        if known:
            out[i] = min(known)
    return out


def _warmup_flags(enriched: np.ndarray, boot_start: np.ndarray, config: QaConfig) -> np.ndarray:
    """WARMING_UP / NO2_WARMING_UP for readings soon after their boot (device bit aside)."""
    out = np.zeros(len(enriched), dtype=np.uint32)
    known = boot_start >= 0
    since = enriched["ts_ms"] - boot_start
    out[known & (since < config.warmup_s * 1000)] |= np.uint32(int(QaFlag.WARMING_UP))
    no2 = known & (since < config.no2_warmup_s * 1000) & ~np.isnan(enriched["no2_ugm3"])
    out[no2] |= np.uint32(int(QaFlag.NO2_WARMING_UP))
    return out


def _stuck(
    enriched: np.ndarray, segs: _Segments, name: str, columns: tuple[str, ...], config: QaConfig
) -> tuple[np.ndarray, list[SensorRun | None]]:
    """Readings whose sensor repeated exactly the same values for too long, and each
    segment's run at its end."""
    limit_s = {
        "pm_run": config.pm_stuck_s,
        "no2_run": config.no2_stuck_s,
        "noise_run": config.noise_stuck_s,
    }[name]
    n = len(enriched)
    values = np.stack([enriched[c].astype(np.float64) for c in columns], axis=1)
    absent = np.isnan(values)
    present: np.ndarray = np.logical_not(absent.all(axis=1))
    same = np.zeros(n, dtype=bool)
    same[1:] = ((values[1:] == values[:-1]) | (absent[1:] & absent[:-1])).all(axis=1)
    same &= present
    same[segs.starts] = False
    idx = np.arange(n)
    run_first = np.maximum.accumulate(np.where(same, 0, idx))
    run_start = enriched["ts_ms"][run_first].copy()
    run_count = idx - run_first + 1
    # A segment's first run continues the run its kit ended the last batch with, if
    # the values are the same: all segments compared at once.
    carried = [
        (i, run)
        for i, m in enumerate(segs.memory)
        if m is not None and (run := getattr(m, name)) is not None
    ]
    if carried:
        firsts = segs.starts[[i for i, _ in carried]]
        prev = np.array([run.values for _, run in carried], dtype=np.float64)
        same_run = present[firsts] & np.all(
            (prev == values[firsts]) | (np.isnan(prev) & absent[firsts]), axis=1
        )
        first_of = np.zeros(n, dtype=bool)
        first_of[firsts[same_run]] = True
        carried_start = np.zeros(n, dtype=np.int64)
        carried_count = np.zeros(n, dtype=np.int64)
        carried_start[firsts] = [run.start_ms for _, run in carried]
        carried_count[firsts] = [run.count for _, run in carried]
        inherit = first_of[run_first]
        run_start[inherit] = carried_start[run_first[inherit]]
        run_count[inherit] += carried_count[run_first[inherit]]
    stuck = (
        present
        & (enriched["ts_ms"] - run_start >= limit_s * 1000)
        & (run_count >= config.stuck_min_readings)
    )
    lasts = segs.ends
    ends: list[SensorRun | None] = [
        SensorRun(tuple(vals), start, count) if here else None
        for here, vals, start, count in zip(
            present[lasts].tolist(),
            values[lasts].tolist(),
            run_start[lasts].tolist(),
            run_count[lasts].tolist(),
            strict=True,
        )
    ]
    return stuck, ends


def _distance_m(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance (haversine), metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    out: np.ndarray = 2 * _EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return out


@dataclass(frozen=True, slots=True)
class _AnchorEnd:
    anchor: Position | None
    rejecting_since_ms: int | None


def _jumps(
    enriched: np.ndarray, flags: np.ndarray, segs: _Segments, config: QaConfig
) -> tuple[np.ndarray, list[_AnchorEnd]]:
    """Positions too far from the last accepted one, and each segment's filter state at its end."""
    n = len(enriched)
    usable = (flags & np.uint32(_UNUSABLE_POSITION)) == 0
    seg_of = segs.of_readings(np.arange(len(segs.starts)))
    pts = np.flatnonzero(usable)
    lat = enriched["lat_deg"][pts]
    lon = enriched["lon_deg"][pts]
    ts = enriched["ts_ms"][pts]
    seg = seg_of[pts]
    # Previous usable point of the same segment, or the remembered anchor.
    prev_lat = np.full(len(pts), np.nan)
    prev_lon = np.full(len(pts), np.nan)
    prev_ts = np.zeros(len(pts), dtype=np.int64)
    same = np.zeros(len(pts), dtype=bool)
    same[1:] = seg[1:] == seg[:-1]
    prev_lat[1:] = np.where(same[1:], lat[:-1], np.nan)
    prev_lon[1:] = np.where(same[1:], lon[:-1], np.nan)
    prev_ts[1:] = ts[:-1]
    firsts = np.flatnonzero(~same)
    for j in firsts.tolist():
        m = segs.memory[int(seg[j])]
        if m is not None and m.anchor is not None:
            prev_lat[j], prev_lon[j] = m.anchor.lat_deg, m.anchor.lon_deg
            prev_ts[j] = m.anchor.ts_ms
    allowed = config.jump_slack_m + config.max_speed_mps * np.maximum(ts - prev_ts, 0) / 1000.0
    with np.errstate(invalid="ignore"):
        suspect = _distance_m(prev_lat, prev_lon, lat, lon) > allowed  # NaN prev: False

    jumps = np.zeros(n, dtype=bool)
    ends: list[_AnchorEnd] = []
    seg_ids = np.arange(len(segs.starts))
    lo = np.searchsorted(seg, seg_ids, side="left").tolist()
    hi = np.searchsorted(seg, seg_ids, side="right").tolist()
    suspect_segs = set(seg[suspect].tolist())

    lat_deg, lon_deg, ts_ms = lat.tolist(), lon.tolist(), ts.tolist()

    def position(j: int) -> Position:
        return Position(lat_deg[j], lon_deg[j], ts_ms[j])

    for i, m in enumerate(segs.memory):
        if lo[i] == hi[i]:  # no usable position: the filter state carries on unchanged
            ends.append(_AnchorEnd(m.anchor, m.rejecting_since_ms) if m else _AnchorEnd(None, None))
            continue
        if i not in suspect_segs:
            ends.append(_AnchorEnd(position(hi[i] - 1), None))
            continue
        k = lo[i] + int(np.argmax(suspect[lo[i] : hi[i]]))
        if k > lo[i]:
            start = _AnchorEnd(position(k - 1), None)
        else:
            start = _AnchorEnd(m.anchor, m.rejecting_since_ms) if m else _AnchorEnd(None, None)
        tail = np.arange(k, hi[i])
        rejected, end = _filter_sequentially(lat[tail], lon[tail], ts[tail], start, config)
        jumps[pts[tail[rejected]]] = True
        ends.append(end)
    return jumps, ends


def _filter_sequentially(
    lat: np.ndarray, lon: np.ndarray, ts: np.ndarray, start: _AnchorEnd, config: QaConfig
) -> tuple[np.ndarray, _AnchorEnd]:
    anchor = start.anchor
    since = start.rejecting_since_ms
    rejected = np.zeros(len(ts), dtype=bool)
    reanchor_ms = config.jump_reanchor_s * 1000
    for i, (a, b, t) in enumerate(zip(lat.tolist(), lon.tolist(), ts.tolist(), strict=True)):
        if anchor is not None:
            d = _haversine_m(anchor.lat_deg, anchor.lon_deg, a, b)
            allowed = config.jump_slack_m + config.max_speed_mps * max(t - anchor.ts_ms, 0) / 1000
            if d > allowed:
                since = t if since is None else since
                if t - since < reanchor_ms:
                    rejected[i] = True
                    continue
        anchor, since = Position(a, b, t), None
    return rejected, _AnchorEnd(anchor, since)


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def _new_memory(
    enriched: np.ndarray,
    *,
    states: Mapping[int, KitState],
    segs: _Segments,
    boot_start: np.ndarray,
    runs: dict[str, list[SensorRun | None]],
    anchors: list[_AnchorEnd],
) -> dict[int, QaMemory]:
    """Each kit's memory after the batch: from its newest segment, unless older data only."""
    out: dict[int, QaMemory] = {}
    # Columns taken out as lists once: an element of a structured array's field costs
    # a view and a conversion each time, and this loop runs once per segment.
    firsts = enriched[segs.starts]
    kits, rides, boots = (firsts[k].tolist() for k in ("kit_id", "ride_id", "boot_id"))
    last_ts_ms = enriched["ts_ms"][segs.ends].tolist()
    boot_starts = boot_start.tolist()
    for i, (kit, last_ts) in enumerate(zip(kits, last_ts_ms, strict=True)):
        state = states.get(kit)
        current = out.get(kit) or (state.qa if state is not None else None)
        if current is not None and last_ts < current.last_ts_ms:
            if kit not in out:
                out[kit] = current
            continue
        out[kit] = QaMemory(
            ride_id=rides[i],
            boot_id=boots[i],
            last_ts_ms=last_ts,
            boot_start_ms=boot_starts[i] if boot_starts[i] >= 0 else None,
            anchor=anchors[i].anchor,
            rejecting_since_ms=anchors[i].rejecting_since_ms,
            pm_run=runs["pm_run"][i],
            no2_run=runs["no2_run"][i],
            noise_run=runs["noise_run"][i],
        )
    return out
