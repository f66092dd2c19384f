"""Kits on bikes: readings, frames and status messages, deterministically from a seed.

A :class:`Fleet` is built from a :class:`SimulationConfig`: a town, an
environment, and one :class:`Bike` per kit with its round, calibration, key
and faults. :meth:`Fleet.run` returns a :class:`Run`: an iterator of
:class:`Publication` in publish-time order, which records its
:class:`~simulators.truth.TruthRecord` as it goes.

Time advances in slices (``slice_s``): each kit turns the slice's readings into
frames, and publications are released once no later slice can produce an
earlier one, so memory stays bounded by a slice whatever the run's length.

Every random draw comes from a generator seeded by (seed, purpose, kit index),
so a kit's round, calibration and faults do not depend on how many other kits
there are, and the same config gives the same bytes.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from zoneinfo import ZoneInfo

import numpy as np

from firmware_protocol.frames import StatusBits
from firmware_protocol.readings import READING_DTYPE
from firmware_protocol.status import StatusMessage, encode_status
from firmware_protocol.wire import MAX_READINGS_PER_FRAME, SCALED_FIELDS
from simulators.encoding import EncodedBlock, FrameEncoder
from simulators.environment import FIELDS, Environment, EnvironmentSpec
from simulators.exceptions import SimulatorConfigError
from simulators.faults import FaultPlan, KitFaults, in_intervals
from simulators.rounds import RoundSpec, Trajectory, plan_shift
from simulators.sensors import (
    PM_FIELDS,
    KitCalibration,
    SensorSpec,
    gnss,
    measure,
)
from simulators.town import Town, TownSpec, generate_town
from simulators.truth import FRAME_DTYPE, TRUTH_DTYPE, TruthRecord
from simulators.truthflags import CorruptionKind, FrameFate, TruthFlag

#: 2026-06-15 09:00 in Alphen aan den Rijn: a Monday morning, rounds starting.
DEFAULT_START_MS = int(
    datetime(2026, 6, 15, 9, 0, tzinfo=ZoneInfo("Europe/Amsterdam")).timestamp() * 1000
)
FIRMWARE_VERSION = "sim-1.0"

# Purposes of the random streams: (seed, purpose, index) seeds each generator.
_TOWN, _ENVIRONMENT, _KIT_ID, _ROUTE, _CALIBRATION, _FAULTS, _NOISE, _FRAMES, _UNKNOWN = range(9)


def stream(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, index)))


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Everything a run depends on. Same config, same bytes."""

    n_bikes: int = 10
    duration_s: float = 3600.0
    start_ms: int = DEFAULT_START_MS
    seed: int = 0
    reading_interval_s: float = 5.0  # kits read every 1–10 s; interval_ms says so per reading
    batch_size: int = 10  # readings per frame while online
    town: TownSpec = field(default_factory=TownSpec)
    rounds: RoundSpec = field(default_factory=RoundSpec)
    environment: EnvironmentSpec = field(default_factory=EnvironmentSpec)
    sensors: SensorSpec = field(default_factory=SensorSpec)
    faults: FaultPlan = field(default_factory=FaultPlan)
    slice_s: float = 900.0  # simulated time generated at once; bigger is faster, holds more
    publish_latency_ms: tuple[int, int] = (
        50,
        800,
    )  # from the last reading of a frame to its publish
    burst_gap_ms: int = 20  # between the frames of a late upload burst
    duplicate_delay_ms: tuple[int, int] = (100, 5000)
    status_interval_s: float = 300.0  # heartbeat period while online
    # A broker gives up on a silent client after 1.5 × its keepalive (MQTT 3.1.1
    # §3.1.2.10) and publishes its will: 45 s for the kits' 30 s keepalive.
    will_delay_s: float = 45.0
    reboot_down_s: float = 30.0  # a power cycle takes this long
    record_truth: bool = True
    #: (kit_id, key) of kits made elsewhere (`bikesense kits add`), one per bike, in place
    #: of the ids and keys drawn from the seed; empty: drawn.
    kits: tuple[tuple[int, bytes], ...] = ()

    def validate(self) -> None:
        if not 1 <= self.n_bikes <= 100_000:
            raise SimulatorConfigError(f"n_bikes must be 1–100000 (got {self.n_bikes})")
        if self.kits:
            if len(self.kits) != self.n_bikes:
                raise SimulatorConfigError(
                    f"{len(self.kits)} kits given for {self.n_bikes} bikes: give one per bike"
                )
            ids = [kit_id for kit_id, _ in self.kits]
            if len(set(ids)) != len(ids):
                raise SimulatorConfigError("a kit id is given twice")
            for kit_id, key in self.kits:
                if not 0 <= kit_id < 2**32:
                    raise SimulatorConfigError(f"kit id {kit_id} is not a 32-bit unsigned integer")
                if len(key) != 32:
                    raise SimulatorConfigError(
                        f"kit {kit_id}'s key has {len(key)} bytes; kit secrets have 32"
                    )
        if not 0 < self.duration_s <= 7 * 86_400:
            raise SimulatorConfigError(
                f"duration_s must be within 0–7 days (got {self.duration_s})"
            )
        if not 0 <= self.start_ms < 2**53:
            raise SimulatorConfigError(f"start_ms must be a Unix time in ms (got {self.start_ms})")
        if not 0.5 <= self.reading_interval_s <= 60.0:
            raise SimulatorConfigError(
                f"reading_interval_s must be 0.5–60 s (got {self.reading_interval_s})"
            )
        if not 1 <= self.batch_size <= MAX_READINGS_PER_FRAME:
            raise SimulatorConfigError(
                f"batch_size must be 1–{MAX_READINGS_PER_FRAME} (got {self.batch_size})"
            )
        if not 10 <= self.slice_s <= 86_400:
            raise SimulatorConfigError(f"slice_s must be 10 s – 1 day (got {self.slice_s})")
        for name in ("publish_latency_ms", "duplicate_delay_ms"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise SimulatorConfigError(
                    f"{name} must be a range 0 ≤ low ≤ high (got {low}-{high})"
                )
        if (
            self.status_interval_s <= 0
            or self.reboot_down_s < 0
            or self.burst_gap_ms < 0
            or self.will_delay_s < 0
        ):
            raise SimulatorConfigError(
                "status_interval_s must be positive; reboot_down_s, burst_gap_ms and "
                "will_delay_s not negative"
            )
        self.town.validate()
        self.rounds.validate()
        self.environment.validate()
        self.sensors.validate()
        self.faults.validate()

    @property
    def interval_ms(self) -> int:
        return round(self.reading_interval_s * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + round(self.duration_s * 1000)


class Kind(IntEnum):
    FRAME = 0  # a readings frame, to {root}/kits/{id}/up
    STATUS = 1  # a status message, retained, to {root}/kits/{id}/status


@dataclass(frozen=True, slots=True)
class Publication:
    """One MQTT publish: when (Unix ms, simulated), from which kit, what."""

    publish_ms: int
    kit_id: int
    kind: Kind
    payload: bytes

    @property
    def retain(self) -> bool:
        return self.kind == Kind.STATUS

    @property
    def relative_topic(self) -> str:
        return f"kits/{self.kit_id}/{'up' if self.kind == Kind.FRAME else 'status'}"

    def topic(self, topic_root: str = "bikesense/v1") -> str:
        return f"{topic_root}/{self.relative_topic}"


@dataclass(frozen=True, slots=True)
class Boot:
    boot_id: int
    on_ms: int  # relative to the run start
    off_ms: int
    last: bool  # the shift's final power-off (not a reboot)


@dataclass(frozen=True, slots=True, eq=False)
class Bike:
    """A bike and the kit on it."""

    index: int
    kit_id: int
    key: bytes
    depot_node: int
    trajectory: Trajectory
    calibration: KitCalibration
    faults: KitFaults
    boots: tuple[Boot, ...]
    battery_start_pct: float


class Fleet:
    """The town, the truth fields and the bikes of one configuration."""

    def __init__(self, config: SimulationConfig) -> None:
        config.validate()
        max_offline_readings = config.faults.offline_s[1] / config.reading_interval_s
        if config.faults.offline_kits > 0 and max_offline_readings > _KIT_BUFFER_READINGS:
            raise SimulatorConfigError(
                f"offline_s up to {config.faults.offline_s[1]:g} s buffers more than the kit's "
                f"{_KIT_BUFFER_READINGS} readings at one per {config.reading_interval_s:g} s"
            )
        self.config = config
        self.town: Town = generate_town(config.town, stream(config.seed, _TOWN))
        self.environment = Environment(
            self.town, config.environment, stream(config.seed, _ENVIRONMENT)
        )
        used: set[int] = {kit_id for kit_id, _ in config.kits}
        self.bikes: tuple[Bike, ...] = tuple(self._bike(i, used) for i in range(config.n_bikes))
        unknown_rng = stream(config.seed, _UNKNOWN)
        self.unknown_kits: tuple[tuple[int, bytes], ...] = tuple(
            (_unique_id(unknown_rng, used), unknown_rng.bytes(32)) for _ in range(3)
        )

    @property
    def kits(self) -> list[tuple[int, bytes]]:
        """(kit_id, key) of every kit in the fleet, to register them before a run."""
        return [(b.kit_id, b.key) for b in self.bikes]

    def bike(self, kit_id: int) -> Bike:
        for b in self.bikes:
            if b.kit_id == kit_id:
                return b
        raise KeyError(f"no kit {kit_id} in this fleet")

    def run(self) -> Run:
        """A fresh run: iterate it for publications; its ``truth`` fills as it goes."""
        return Run(self)

    def _bike(self, index: int, used: set[int]) -> Bike:
        c = self.config
        id_rng = stream(c.seed, _KIT_ID, index)
        kit_id = _unique_id(id_rng, used)
        key = id_rng.bytes(32)
        if c.kits:
            # Drawn all the same, so the draws after them stay those of the seed.
            kit_id, key = c.kits[index]
        battery = float(id_rng.uniform(70.0, 100.0))
        depot = self.town.depot_nodes[index % len(self.town.depot_nodes)]
        traj = plan_shift(
            self.town, depot, c.rounds, stream(c.seed, _ROUTE, index), horizon_s=c.duration_s
        )
        calibration = KitCalibration.draw(c.sensors, stream(c.seed, _CALIBRATION, index))
        on_ms = 0
        off_ms = min(round(traj.end_s * 1000), round(c.duration_s * 1000))
        fault_rng = stream(c.seed, _FAULTS, index)
        faults = KitFaults.draw(c.faults, fault_rng, start_s=on_ms / 1000, end_s=off_ms / 1000)
        # A kit that is offline keeps its buffer and does not reboot (it would lose it).
        reboots = [
            r
            for r in faults.reboots_s
            if faults.offline is None or not faults.offline[0] - 60 <= r <= faults.offline[1]
        ]
        boots: list[Boot] = []
        start = on_ms
        for r in reboots:
            down = round(r * 1000)
            if down - start < 1000 or down >= off_ms:
                continue
            boots.append(Boot(int(fault_rng.integers(1, 2**32)), start, down, last=False))
            start = down + round(c.reboot_down_s * 1000)
        if start < off_ms:
            boots.append(Boot(int(fault_rng.integers(1, 2**32)), start, off_ms, last=True))
        return Bike(index, kit_id, key, depot, traj, calibration, faults, tuple(boots), battery)


def _unique_id(rng: np.random.Generator, used: set[int]) -> int:
    while True:
        candidate = int(rng.integers(1, 2**31))
        if candidate not in used:
            used.add(candidate)
            return candidate


#: A kit's reading buffer (flash) holds this many readings; longer outages are refused
#: at configuration time rather than silently dropping readings.
_KIT_BUFFER_READINGS = 50_000


class _KitState:
    """What one kit carries from slice to slice: boot, sequence, buffer, next heartbeat."""

    def __init__(self, bike: Bike, config: SimulationConfig) -> None:
        self.bike = bike
        self.boot_index = -1
        self.seq = 0
        self.online = True
        self.buffer: list[tuple[np.ndarray, np.ndarray]] = []  # (READING_DTYPE, TRUTH_DTYPE) chunks
        self.buffered = 0
        self.next_status_ms = 0
        self.noise_rng = stream(config.seed, _NOISE, bike.index)
        self.frame_rng = stream(config.seed, _FRAMES, bike.index)

    @property
    def boot(self) -> Boot:
        return self.bike.boots[self.boot_index]


class Run:
    """Publications in publish order; the truth of what was published in :attr:`truth`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.config = fleet.config
        self.truth: TruthRecord | None = (
            TruthRecord(fleet.town.depots_latlon) if self.config.record_truth else None
        )
        #: Simulated time up to which everything has been generated, ms since the start.
        self.progress_ms = 0
        self._states = [_KitState(b, self.config) for b in fleet.bikes]
        self._heap: list[tuple[int, int, Publication]] = []
        self._counter = 0
        self._iter = self._generate()
        self._depots_xy = fleet.town.depots_xy_m
        self._encoder = FrameEncoder()
        self._will_delay_ms = round(self.config.will_delay_s * 1000)

    def __iter__(self) -> Iterator[Publication]:
        return self._iter

    def __next__(self) -> Publication:
        return next(self._iter)

    # -- the loop -----------------------------------------------------------

    def _generate(self) -> Iterator[Publication]:
        c = self.config
        total_ms = round(c.duration_s * 1000)
        slice_ms = round(c.slice_s * 1000)
        for a in range(0, total_ms, slice_ms):
            b = min(a + slice_ms, total_ms)
            for state in self._states:
                self._advance(state, a, b)
            self.progress_ms = b
            limit = c.start_ms + b
            while self._heap and (self._heap[0][0] < limit or b == total_ms):
                yield heapq.heappop(self._heap)[2]

    def _push(self, pub: Publication) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (pub.publish_ms, self._counter, pub))

    def _advance(self, st: _KitState, a: int, b: int) -> None:
        """Everything kit ``st`` does in [a, b) ms after the start."""
        bike = st.bike
        offline = bike.faults.offline
        events: list[tuple[int, int, int]] = []  # (time, order, boot index) boundaries in [a, b)
        for i, boot in enumerate(bike.boots):
            if a <= boot.on_ms < b:
                events.append((boot.on_ms, _EV_BOOT_ON, i))
            if a <= boot.off_ms < b or (
                boot.off_ms == b and b == round(self.config.duration_s * 1000)
            ):
                events.append((boot.off_ms, _EV_BOOT_OFF, i))
        if offline is not None:
            off0, off1 = round(offline[0] * 1000), round(offline[1] * 1000)
            if a <= off0 < b:
                events.append((off0, _EV_OFFLINE, 0))
            if a <= off1 < b:
                events.append((off1, _EV_ONLINE, 0))
        events.sort()
        readings, truth = self._readings(st, a, b)
        times = truth["true_ts_ms"] - self.config.start_ms
        pos = 0
        for t, kind, i in events:
            j = int(np.searchsorted(times, t, side="left"))
            self._take(st, readings[pos:j], truth[pos:j])
            pos = j
            self._event(st, t, kind, i)
        self._take(st, readings[pos:], truth[pos:])
        self._heartbeats(st, a, b)

    def _event(self, st: _KitState, t: int, kind: int, boot_index: int) -> None:
        if kind == _EV_BOOT_ON:
            st.boot_index = boot_index
            st.seq = 0
            st.next_status_ms = t
        elif kind == _EV_BOOT_OFF:
            self._flush(st, t, burst=False)
            st.next_status_ms = 1 << 62
            if st.bike.boots[boot_index].last:
                self._status(st, t, online=False)  # a clean shutdown says goodbye itself
            else:
                # Power lost: the broker publishes the last will when the keepalive runs
                # out, or when the rebooted kit connects again, whichever comes first.
                will_ms = min(self._will_delay_ms, round(self.config.reboot_down_s * 1000))
                self._status(st, t, online=False, publish_at=t + will_ms)
        elif kind == _EV_OFFLINE:
            st.online = False
            offline = st.bike.faults.offline
            if offline is not None and (offline[1] - offline[0]) * 1000 > self._will_delay_ms:
                self._status(st, t, online=False, publish_at=t + self._will_delay_ms)
        elif kind == _EV_ONLINE:
            st.online = True
            self._status(st, t)
            self._flush(st, t, burst=True)

    def _heartbeats(self, st: _KitState, a: int, b: int) -> None:
        while st.boot_index >= 0 and st.next_status_ms < b:
            t = max(st.next_status_ms, a)
            if st.online and st.boot.on_ms <= t < st.boot.off_ms:
                self._status(st, t)
            st.next_status_ms = t + round(self.config.status_interval_s * 1000)

    def _status(
        self, st: _KitState, t: int, *, online: bool = True, publish_at: int | None = None
    ) -> None:
        """A status message as of ``t``; ``online=False`` is the kit's last will."""
        bike, boot = st.bike, st.boot
        battery = max(bike.battery_start_pct - 12.0 * t / 3_600_000, 1.0)  # ~12 %/h riding
        status = StatusBits.NONE
        if t - boot.on_ms < self.config.sensors.warmup_s * 1000:
            status |= StatusBits.WARMING_UP
        if battery < 15.0:
            status |= StatusBits.LOW_BATTERY
        msg = StatusMessage(
            battery_pct=round(battery, 1),
            battery_v=round(3.3 + 0.9 * battery / 100, 2),
            firmware_version=FIRMWARE_VERSION,
            uptime_s=max(t - boot.on_ms, 0) // 1000,
            queue_depth=st.buffered,
            ts_ms=self.config.start_ms + t + bike.faults.clock_skew_ms,
            kit_id=bike.kit_id,
            boot_id=boot.boot_id,
            status=status,
        )
        # docs/ingest.md: the last will is a status message with "online": false;
        # the protocol's decoder ignores members it does not know.
        doc = json.loads(encode_status(msg))
        doc["online"] = online
        payload = json.dumps(doc, separators=(",", ":")).encode()
        at = self.config.start_ms + (t if publish_at is None else publish_at)
        self._push(Publication(at, bike.kit_id, Kind.STATUS, payload))

    # -- readings -----------------------------------------------------------

    def _readings(self, st: _KitState, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The kit's readings with true times in [a, b): (READING_DTYPE, TRUTH_DTYPE)."""
        c = self.config
        bike = st.bike
        step = c.interval_ms
        parts_t: list[np.ndarray] = []
        parts_boot: list[np.ndarray] = []
        for i, boot in enumerate(bike.boots):
            lo, hi = max(a, boot.on_ms + step), min(b, boot.off_ms)
            if lo >= hi:
                continue
            k0 = -(-(lo - boot.on_ms) // step)
            k1 = -(-(hi - boot.on_ms) // step)
            t = boot.on_ms + step * np.arange(k0, k1, dtype=np.int64)
            parts_t.append(t)
            parts_boot.append(np.full(len(t), i))
        if not parts_t:
            return np.zeros(0, READING_DTYPE), np.zeros(0, TRUTH_DTYPE)
        t_rel = np.concatenate(parts_t)
        boot_idx = np.concatenate(parts_boot)
        n = len(t_rel)
        t_s = t_rel / 1000.0
        on_ms = np.array([bike.boots[i].on_ms for i in boot_idx.tolist()], dtype=np.int64)
        true_ts = c.start_ms + t_rel

        x, y = bike.trajectory.position_at(t_s)
        speed = bike.trajectory.speed_at(t_s)
        truth_fields = self.fleet.environment.fields_xy(x, y, true_ts)
        rng = st.noise_rng
        m = measure(
            c.sensors,
            bike.calibration,
            truth_fields,
            boot_elapsed_s=(t_rel - on_ms) / 1000.0,
            run_elapsed_s=t_s,
            speed_mps=speed,
            rng=rng,
        )
        fix = gnss(c.sensors, x, y, speed, rng)
        flags = m.flags | fix.flags
        rx, ry = fix.x_m, fix.y_m

        faults = bike.faults
        lost = in_intervals(t_s, faults.gps_loss)
        values = dict(m.values)
        bias = dict(m.bias)
        if faults.stuck is not None:
            stuck = in_intervals(t_s, (faults.stuck,))
            for name, v in zip(PM_FIELDS, faults.stuck_pm_ugm3, strict=True):
                values[name] = np.where(stuck, v, values[name])
                bias[name] = np.where(stuck, v - truth_fields[name], bias[name])
            flags[stuck] |= np.uint32(TruthFlag.STUCK)
        if faults.clock_skew_ms:
            flags |= np.uint32(TruthFlag.CLOCK_SKEWED)

        readings = np.zeros(n, READING_DTYPE)
        readings["kit_id"] = bike.kit_id
        readings["ts_ms"] = true_ts + faults.clock_skew_ms
        lat, lon = self.fleet.town.to_latlon(rx, ry)
        readings["lat_deg"] = np.where(lost, np.nan, lat)
        readings["lon_deg"] = np.where(lost, np.nan, lon)
        readings["gnss_fix"] = np.where(lost, 0, fix.gnss_fix)
        readings["hdop"] = np.where(lost, np.nan, fix.hdop)
        readings["satellites"] = np.where(lost, rng.integers(0, 4, n), fix.satellites)
        readings["speed_mps"] = np.where(lost, np.nan, fix.speed_mps)
        for name in FIELDS:
            readings[name] = values[name]
        readings["noise_lamax_db"] = m.lamax_db
        readings["interval_ms"] = step
        readings["status"] = m.status
        flags[lost] |= np.uint32(TruthFlag.GPS_LOST)
        flags[lost] &= ~np.uint32(TruthFlag.GPS_JUMP)
        _quantise(readings)

        truth = np.zeros(n, TRUTH_DTYPE)
        truth["kit_id"] = bike.kit_id
        truth["ts_ms"] = readings["ts_ms"]
        truth["true_ts_ms"] = true_ts
        truth["interval_ms"] = step
        truth["lat_deg"] = readings["lat_deg"]
        truth["lon_deg"] = readings["lon_deg"]
        truth["true_lat_deg"], truth["true_lon_deg"] = self.fleet.town.to_latlon(x, y)
        d = np.hypot(rx[:, None] - self._depots_xy[:, 0], ry[:, None] - self._depots_xy[:, 1]).min(
            axis=1
        )
        truth["depot_distance_m"] = np.where(lost, np.nan, d)
        truth["flags"] = flags
        for name in FIELDS:
            truth[f"true_{name}"] = truth_fields[name]
            truth[name] = readings[name]
            truth[f"bias_{name}"] = bias[name]
            truth[f"sigma_{name}"] = m.sigma[name]
        # The boot id travels in the frame header; keep it per reading until framing.
        readings["boot_id"] = [bike.boots[i].boot_id for i in boot_idx.tolist()]
        return readings, truth

    # -- frames -------------------------------------------------------------

    def _take(self, st: _KitState, readings: np.ndarray, truth: np.ndarray) -> None:
        """Buffer readings; while online, send every full batch."""
        if len(readings) == 0:
            return
        st.buffer.append((readings, truth))
        st.buffered += len(readings)
        if not st.online:
            return
        batch = self.config.batch_size
        if st.buffered < batch:
            return
        r = np.concatenate([p[0] for p in st.buffer])
        tr = np.concatenate([p[1] for p in st.buffer])
        full = (len(r) // batch) * batch
        lo, hi = self.config.publish_latency_ms
        per_block = (MAX_READINGS_PER_FRAME // batch) * batch
        for b0 in range(0, full, per_block):
            block = self._encoder.block(r[b0 : min(b0 + per_block, full)])
            for s in range(0, len(block), batch):
                at = int(tr["true_ts_ms"][b0 + s + batch - 1]) + int(
                    st.frame_rng.integers(lo, hi + 1)
                )
                self._frame(
                    st,
                    block,
                    s,
                    s + batch,
                    truth=tr[b0 + s : b0 + s + batch],
                    publish_ms=at,
                    buffered=False,
                )
        st.buffer = [(r[full:], tr[full:])] if full < len(r) else []
        st.buffered = len(r) - full

    def _flush(self, st: _KitState, t: int, *, burst: bool) -> None:
        """Send everything buffered at ``t`` ms after the start: a burst after an outage."""
        if not st.buffer:
            return
        r = np.concatenate([p[0] for p in st.buffer])
        tr = np.concatenate([p[1] for p in st.buffer])
        st.buffer, st.buffered = [], 0
        size = MAX_READINGS_PER_FRAME if burst else self.config.batch_size
        at = self.config.start_ms + t
        for k, s in enumerate(range(0, len(r), size)):
            block = self._encoder.block(r[s : s + size])
            self._frame(
                st,
                block,
                0,
                len(block),
                truth=tr[s : s + size],
                publish_ms=at + k * self.config.burst_gap_ms,
                buffered=burst,
            )

    def _frame(
        self,
        st: _KitState,
        block: EncodedBlock,
        start: int,
        stop: int,
        *,
        truth: np.ndarray,
        publish_ms: int,
        buffered: bool,
    ) -> None:
        """Readings ``start:stop`` of ``block`` as one frame, with whatever faults befall it."""
        c = self.config
        bike = st.bike
        boot_id = block.boot_id
        seq = st.seq
        st.seq += 1
        payload = block.frame(
            start, stop, kit_id=bike.kit_id, boot_id=boot_id, seq=seq, key=bike.key
        )

        # The same draws for every frame, whatever the plan, so rates are independent.
        rng = st.frame_rng
        u_fate, u_dup, u_unknown = rng.random(3)
        dup_delay = int(rng.integers(c.duplicate_delay_ms[0], c.duplicate_delay_ms[1] + 1))
        corruption = CorruptionKind(int(rng.integers(1, len(CorruptionKind))))
        damage_seed = int(rng.integers(0, 2**63))

        plan = c.faults
        fate = FrameFate.OK
        flags = np.uint32(0)
        damage_rng = (
            np.random.default_rng(damage_seed)
            if u_fate < plan.corrupt + plan.wrong_mac or u_unknown < plan.unknown_kit
            else rng
        )
        if u_fate < plan.corrupt:
            fate = FrameFate.CORRUPTED
            payload = _damage(payload, corruption, damage_rng)
            flags |= np.uint32(TruthFlag.CORRUPTED)
        elif u_fate < plan.corrupt + plan.wrong_mac:
            fate = FrameFate.WRONG_MAC
            payload = block.frame(
                start, stop, kit_id=bike.kit_id, boot_id=boot_id, seq=seq, key=damage_rng.bytes(32)
            )
            flags |= np.uint32(TruthFlag.WRONG_MAC)
        duplicated = u_dup < plan.duplicate
        if duplicated:
            flags |= np.uint32(TruthFlag.DUPLICATED)
        if buffered:
            flags |= np.uint32(TruthFlag.BUFFERED)

        self._push(Publication(publish_ms, bike.kit_id, Kind.FRAME, payload))
        if duplicated:
            self._push(Publication(publish_ms + dup_delay, bike.kit_id, Kind.FRAME, payload))
        if self.truth is not None:
            truth = truth.copy()
            truth["boot_id"] = boot_id
            truth["seq"] = seq
            truth["idx"] = np.arange(len(truth))
            truth["publish_ms"] = publish_ms
            truth["flags"] |= flags
            self.truth.add(
                truth,
                _frame_row(
                    kit_id=bike.kit_id,
                    boot_id=boot_id,
                    seq=seq,
                    count=len(truth),
                    publish_ms=publish_ms,
                    fate=fate,
                    corruption=corruption if fate == FrameFate.CORRUPTED else CorruptionKind.NONE,
                    copies=2 if duplicated else 1,
                    buffered=buffered,
                    size=len(payload),
                ),
            )
        if u_unknown < plan.unknown_kit:
            kit_id, key = self.fleet.unknown_kits[
                int(damage_rng.integers(len(self.fleet.unknown_kits)))
            ]
            stranger = block.frame(start, stop, kit_id=kit_id, boot_id=boot_id, seq=seq, key=key)
            self._push(Publication(publish_ms + 1, kit_id, Kind.FRAME, stranger))
            if self.truth is not None:
                self.truth.add(
                    np.zeros(0, TRUTH_DTYPE),
                    _frame_row(
                        kit_id=kit_id,
                        boot_id=boot_id,
                        seq=seq,
                        count=stop - start,
                        publish_ms=publish_ms + 1,
                        fate=FrameFate.UNKNOWN_KIT,
                        corruption=CorruptionKind.NONE,
                        copies=1,
                        buffered=False,
                        size=len(stranger),
                    ),
                )


_EV_BOOT_ON, _EV_OFFLINE, _EV_ONLINE, _EV_BOOT_OFF = 0, 1, 2, 3


def _frame_row(
    *,
    kit_id: int,
    boot_id: int,
    seq: int,
    count: int,
    publish_ms: int,
    fate: FrameFate,
    corruption: CorruptionKind,
    copies: int,
    buffered: bool,
    size: int,
) -> np.ndarray:
    row = np.zeros(1, FRAME_DTYPE)
    row[0] = (kit_id, boot_id, seq, count, publish_ms, fate, corruption, copies, buffered, size)
    return row


def _damage(payload: bytes, kind: CorruptionKind, rng: np.random.Generator) -> bytes:
    """A broken copy of ``payload`` that no decoder can accept (the CRC and MAC see to it)."""
    data = bytearray(payload)
    if kind == CorruptionKind.BIT_FLIPS:
        # Flip bits after the magic so that the frame still looks like ours at first sight.
        for pos in rng.choice(
            np.arange(2 * 8, len(data) * 8), size=int(rng.integers(1, 9)), replace=False
        ).tolist():
            data[pos // 8] ^= 1 << (pos % 8)
        return bytes(data)
    if kind == CorruptionKind.TRUNCATED:
        return bytes(data[: int(rng.integers(1, len(data)))])
    if kind == CorruptionKind.GARBAGE:
        return rng.bytes(len(data))
    return bytes(data) + rng.bytes(int(rng.integers(1, 17)))


def _quantise(readings: np.ndarray) -> None:
    """Round every scaled field to the wire resolution, as the decoder will give it back.

    The same float64 operations as the decoder (rint of value × scale, then
    ÷ scale) so that the truth's "as encoded" values equal decoded values exactly.
    """
    for f in SCALED_FIELDS:
        col = np.asarray(readings[f.name], dtype=np.float64)
        readings[f.name] = np.rint(col * f.scale) / float(f.scale)


def wall_clock_start_ms() -> int:
    """Now, rounded down to the second: the start for real-time runs."""
    import time  # noqa: PLC0415

    return math.floor(time.time()) * 1000
