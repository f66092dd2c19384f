"""The fleet's frames: deterministic, decodable by the real decoder, faults as requested."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from firmware_protocol.arrays import decode_readings, encode_readings
from firmware_protocol.exceptions import RemoteProtocolError
from firmware_protocol.frames import StatusBits
from firmware_protocol.readings import READING_DTYPE
from firmware_protocol.status import decode_status
from firmware_protocol.wire import MAX_READINGS_PER_FRAME
from simulators.encoding import EncodedBlock, FrameEncoder
from simulators.exceptions import SimulatorConfigError
from simulators.faults import FaultPlan
from simulators.fleet import Fleet, Kind, SimulationConfig
from simulators.truthflags import FrameFate, TruthFlag
from tests.simulators.simulated import BUSY_FAULTS, Simulated


def binomial_ok(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """``count`` successes of ``n`` trials is within ``sigmas`` standard deviations of n·p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# -- determinism ------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    config = SimulationConfig(n_bikes=4, duration_s=900, seed=42, faults=FaultPlan.typical())
    first = [(p.publish_ms, p.topic(), p.payload) for p in Fleet(config).run()]
    again = [(p.publish_ms, p.topic(), p.payload) for p in Fleet(config).run()]
    assert first == again
    assert len(first) > 50
    other = SimulationConfig(n_bikes=4, duration_s=900, seed=43, faults=FaultPlan.typical())
    assert [p.payload for p in Fleet(other).run()] != [p[2] for p in first]


def test_a_kit_does_not_depend_on_the_size_of_the_fleet() -> None:
    small = Fleet(SimulationConfig(n_bikes=3, duration_s=600, seed=8))
    large = Fleet(SimulationConfig(n_bikes=9, duration_s=600, seed=8))
    assert large.kits[:3] == small.kits
    assert len({k for k, _ in large.kits}) == 9
    assert all(len(key) == 32 for _, key in large.kits)
    frames_of_first = [p.payload for p in small.run() if p.kit_id == small.kits[0][0]]
    assert frames_of_first == [p.payload for p in large.run() if p.kit_id == small.kits[0][0]]


def test_given_kits_ride_in_place_of_the_drawn_ones() -> None:
    """Kits made elsewhere (`kits add`) change ids and keys, and nothing else of the ride."""
    drawn = Fleet(SimulationConfig(n_bikes=2, duration_s=600, seed=8))
    given = ((1001, bytes(range(32))), (1002, bytes(range(1, 33))))
    fleet = Fleet(SimulationConfig(n_bikes=2, duration_s=600, seed=8, kits=given))
    assert fleet.kits == list(given)
    for ours, theirs in zip(fleet.bikes, drawn.bikes, strict=True):
        assert np.array_equal(ours.trajectory.t_s, theirs.trajectory.t_s)
        assert ours.calibration == theirs.calibration
    assert {p.kit_id for p in fleet.run()} == {1001, 1002}
    with pytest.raises(SimulatorConfigError, match="one per bike"):
        Fleet(SimulationConfig(n_bikes=3, kits=given))
    with pytest.raises(SimulatorConfigError, match="32"):
        Fleet(SimulationConfig(n_bikes=1, kits=((5, b"short"),)))


def test_bad_config_names_the_option() -> None:
    with pytest.raises(SimulatorConfigError, match="reading_interval_s"):
        Fleet(SimulationConfig(reading_interval_s=100.0))
    with pytest.raises(SimulatorConfigError, match="batch_size"):
        Fleet(SimulationConfig(batch_size=MAX_READINGS_PER_FRAME + 1))


# -- what goes on the wire --------------------------------------------------


def test_publications_come_in_time_order_on_the_right_topics(faulty_run: Simulated) -> None:
    pubs = faulty_run.publications
    assert all(a.publish_ms <= b.publish_ms for a, b in itertools.pairwise(pubs))
    start = faulty_run.fleet.config.start_ms
    assert pubs[0].publish_ms >= start
    for p in pubs:
        assert p.topic("test-x/bikesense/v1") == (
            f"test-x/bikesense/v1/kits/{p.kit_id}/{'up' if p.kind == Kind.FRAME else 'status'}"
        )
        assert p.retain == (p.kind == Kind.STATUS)


def test_every_frame_decodes_to_its_truth_or_fails_as_intended(faulty_run: Simulated) -> None:
    fleet, truth = faulty_run.fleet, faulty_run.run.truth
    assert truth is not None
    keys = dict(fleet.kits)
    unknown = dict(fleet.unknown_kits)
    fates = {
        (int(f["kit_id"]), int(f["boot_id"]), int(f["seq"])): FrameFate(int(f["fate"]))
        for f in truth.frames
    }
    decoded: list[np.ndarray] = []
    seen_fates: Counter[FrameFate] = Counter()
    for p in faulty_run.publications:
        if p.kind != Kind.FRAME:
            continue
        if p.kit_id in unknown:
            frame = decode_readings(p.payload, unknown[p.kit_id])  # genuine, from a stranger
            identity = (p.kit_id, frame.header.boot_id, frame.header.seq)
            assert fates[identity] == FrameFate.UNKNOWN_KIT
            with pytest.raises(RemoteProtocolError):
                decode_readings(p.payload, keys.get)
            seen_fates[FrameFate.UNKNOWN_KIT] += 1
            continue
        try:
            frame = decode_readings(p.payload, keys.get)
        except RemoteProtocolError:
            seen_fates[FrameFate.CORRUPTED] += 1  # or a wrong MAC: counted together below
            continue
        assert fates[(p.kit_id, frame.header.boot_id, frame.header.seq)] == FrameFate.OK
        assert frame.header.kit_id == p.kit_id
        # The bytes are what the protocol's own encoder makes of these readings.
        h = frame.header
        assert (
            encode_readings(h.kit_id, h.boot_id, h.seq, frame.readings, keys[h.kit_id]) == p.payload
        )
        decoded.append(frame.readings)
    got = np.concatenate(decoded)
    bad = truth.frames[np.isin(truth.frames["fate"], [FrameFate.CORRUPTED, FrameFate.WRONG_MAC])]
    assert seen_fates[FrameFate.CORRUPTED] == int(bad["copies"].sum())
    assert seen_fates[FrameFate.UNKNOWN_KIT] == len(truth.frames_with_fate(FrameFate.UNKNOWN_KIT))

    # Duplicates decode twice; once deduplicated, the readings are exactly the deliverable truth.
    _, first = np.unique(got[["kit_id", "boot_id", "seq", "idx"]], return_index=True)
    unique = got[np.sort(first)]
    deliverable = truth.deliverable()
    assert len(unique) == len(deliverable)
    rows = truth.lookup(unique)
    assert np.all((rows["flags"] & int(TruthFlag.undeliverable())) == 0)
    assert np.array_equal(unique["ts_ms"], rows["ts_ms"])
    for name in (
        "lat_deg",
        "lon_deg",
        "pm1_ugm3",
        "pm25_ugm3",
        "pm10_ugm3",
        "no2_ugm3",
        "noise_laeq_db",
        "temperature_c",
        "humidity_pct",
    ):
        assert np.array_equal(unique[name].astype(np.float64), rows[name], equal_nan=True), name
    assert np.all(unique["interval_ms"] == 5000)


def test_status_messages_describe_the_kit(faulty_run: Simulated) -> None:
    boots = {b.kit_id: {boot.boot_id for boot in b.boots} for b in faulty_run.fleet.bikes}
    statuses = [p for p in faulty_run.publications if p.kind == Kind.STATUS]
    assert len(statuses) >= len(boots) * 2  # at least one at power-on and one heartbeat
    for p in statuses:
        msg = decode_status(p.payload)
        assert msg.kit_id == p.kit_id
        assert msg.boot_id in boots[p.kit_id]
        assert 0 < (msg.battery_pct or 0) <= 100
    # The last will ("online": false) when a kit drops off, and a goodbye at power-off.
    online = {p.kit_id: json.loads(p.payload)["online"] for p in statuses}
    assert not any(online.values())
    start = faulty_run.fleet.config.start_ms
    for bike in faulty_run.fleet.bikes:
        if bike.faults.offline is None:
            continue
        gone = start + round(bike.faults.offline[0] * 1000)
        wills = [
            p
            for p in statuses
            if p.kit_id == bike.kit_id
            and not json.loads(p.payload)["online"]
            and gone < p.publish_ms < gone + 60_000
        ]
        assert len(wills) == 1
    warming = [decode_status(p.payload) for p in statuses if decode_status(p.payload).uptime_s == 0]
    assert warming
    assert all(m.status & StatusBits.WARMING_UP for m in warming)


def test_sequences_run_per_boot_without_gaps(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    fleet_ids = {k for k, _ in faulty_run.fleet.kits}
    seqs: dict[tuple[int, int], list[int]] = defaultdict(list)
    for f in truth.frames:
        if int(f["kit_id"]) in fleet_ids:
            seqs[(int(f["kit_id"]), int(f["boot_id"]))].append(int(f["seq"]))
    for key, values in seqs.items():
        assert sorted(values) == list(range(len(values))), key
    # Reboots give some kits several boots, each starting at seq 0.
    assert len(seqs) > len(fleet_ids)


def test_readings_are_regular_and_warm_up_after_power_on(clean_run: Simulated) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    r = truth.readings
    for kit_id, _ in clean_run.fleet.kits:
        mine = np.sort(r[r["kit_id"] == kit_id]["true_ts_ms"])
        assert np.all(np.diff(mine) == 5000)
    warming = (r["flags"] & TruthFlag.WARMING_UP) != 0
    assert warming.any()
    assert not warming.all()
    # Warm-up is the first two minutes of each boot: 24 readings at 5 s.
    assert warming.sum() == 6 * 23
    # No faults were asked for: none happened.
    for flag in (
        TruthFlag.GPS_LOST,
        TruthFlag.STUCK,
        TruthFlag.CLOCK_SKEWED,
        TruthFlag.BUFFERED,
        TruthFlag.DUPLICATED,
        TruthFlag.CORRUPTED,
        TruthFlag.WRONG_MAC,
    ):
        assert not np.any(r["flags"] & flag), flag
    assert np.all(truth.frames["fate"] == FrameFate.OK)
    # Full batches, but for the last frame of each kit, flushed at power-off.
    for kit_id, _ in clean_run.fleet.kits:
        counts = truth.frames["count"][truth.frames["kit_id"] == kit_id]
        assert np.all(counts[:-1] == 10)
        assert 1 <= counts[-1] <= 10


def test_reported_positions_are_near_the_truth(clean_run: Simulated) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    r = truth.readings
    town = clean_run.fleet.town
    x, y = town.to_xy(r["lat_deg"], r["lon_deg"])
    tx, ty = town.to_xy(r["true_lat_deg"], r["true_lon_deg"])
    error = np.hypot(x - tx, y - ty)
    jumped = (r["flags"] & TruthFlag.GPS_JUMP) != 0
    assert np.percentile(error[~jumped], 95) < 15.0
    if jumped.any():
        assert error[jumped].min() > 20.0
    lat_min, lon_min, lat_max, lon_max = town.bbox_latlon
    assert np.all((r["true_lat_deg"] >= lat_min) & (r["true_lat_deg"] <= lat_max))
    assert np.all((r["true_lon_deg"] >= lon_min) & (r["true_lon_deg"] <= lon_max))


# -- faults at the requested rates -----------------------------------------


def test_frame_faults_appear_at_their_rates(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    fleet_ids = [k for k, _ in faulty_run.fleet.kits]
    own = truth.frames[np.isin(truth.frames["kit_id"], fleet_ids)]
    n = len(own)
    assert n > 500
    assert binomial_ok(int(np.sum(own["fate"] == FrameFate.CORRUPTED)), n, BUSY_FAULTS.corrupt)
    assert binomial_ok(int(np.sum(own["fate"] == FrameFate.WRONG_MAC)), n, BUSY_FAULTS.wrong_mac)
    assert binomial_ok(int(np.sum(own["copies"] == 2)), n, BUSY_FAULTS.duplicate)
    unknown = len(truth.frames_with_fate(FrameFate.UNKNOWN_KIT))
    assert binomial_ok(unknown, n, BUSY_FAULTS.unknown_kit)
    kinds = Counter(int(k) for k in own["corruption"][own["fate"] == FrameFate.CORRUPTED])
    assert len(kinds) >= 2  # bit flips, truncation, garbage, padding: a mix


def test_gps_loss_covers_the_requested_share_of_time(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    r = truth.readings
    lost = (r["flags"] & TruthFlag.GPS_LOST) != 0
    # Episodes of about 90 s make the share noisy: allow a wide band around 10 %.
    assert 0.05 < lost.mean() < 0.17
    assert np.all(np.isnan(r["lat_deg"][lost]))
    assert not np.any(np.isnan(r["lat_deg"][~lost]))


def test_kit_faults_hit_the_requested_share_of_kits() -> None:
    plan = FaultPlan(
        offline_kits=0.3,
        clock_skew_kits=0.2,
        stuck_kits=0.1,
        offline_s=(60.0, 120.0),
        stuck_s=(60.0, 120.0),
    )
    fleet = Fleet(SimulationConfig(n_bikes=400, duration_s=600, seed=3, faults=plan))
    n = len(fleet.bikes)
    assert binomial_ok(sum(b.faults.offline is not None for b in fleet.bikes), n, 0.3)
    assert binomial_ok(sum(b.faults.clock_skew_ms != 0 for b in fleet.bikes), n, 0.2)
    assert binomial_ok(sum(b.faults.stuck is not None for b in fleet.bikes), n, 0.1)
    skews = [abs(b.faults.clock_skew_ms) for b in fleet.bikes if b.faults.clock_skew_ms]
    assert max(skews) <= plan.clock_skew_s * 1000


def test_offline_kits_upload_late_in_bursts(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    config = faulty_run.fleet.config
    offline = [b for b in faulty_run.fleet.bikes if b.faults.offline is not None]
    assert offline
    r = truth.readings
    for bike in offline:
        assert bike.faults.offline is not None
        back_ms = config.start_ms + round(bike.faults.offline[1] * 1000)
        gone_ms = config.start_ms + round(bike.faults.offline[0] * 1000)
        frames = truth.frames[(truth.frames["kit_id"] == bike.kit_id) & truth.frames["buffered"]]
        assert len(frames) >= 1
        assert np.all(frames["publish_ms"] >= back_ms)
        assert np.all(frames["count"] <= MAX_READINGS_PER_FRAME)
        late = r[(r["kit_id"] == bike.kit_id) & ((r["flags"] & TruthFlag.BUFFERED) != 0)]
        # Everything measured while offline came late, in the burst.
        assert late["true_ts_ms"].min() <= gone_ms + 5000 * config.batch_size
        assert late["true_ts_ms"].max() < back_ms
        assert late["publish_ms"].min() >= back_ms
        # Nothing else of that kit was published while it was offline.
        mine = faulty_run.publications
        assert not [
            p
            for p in mine
            if p.kit_id == bike.kit_id
            and gone_ms < p.publish_ms < back_ms
            and p.kind == Kind.FRAME
            and p.publish_ms > gone_ms + 1000
        ]


def test_clock_skew_stuck_sensor_and_reboots(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    r = truth.readings
    for bike in faulty_run.fleet.bikes:
        mine = r[r["kit_id"] == bike.kit_id]
        skew = mine["ts_ms"] - mine["true_ts_ms"]
        assert np.all(skew == bike.faults.clock_skew_ms)
        skewed_flags = bool(np.all(mine["flags"] & TruthFlag.CLOCK_SKEWED))
        assert skewed_flags == (bike.faults.clock_skew_ms != 0)
        stuck = mine[(mine["flags"] & TruthFlag.STUCK) != 0]
        if bike.faults.stuck is None:
            assert len(stuck) == 0
        elif len(stuck):
            assert len(np.unique(stuck["pm25_ugm3"])) == 1
    skewed = sum(b.faults.clock_skew_ms != 0 for b in faulty_run.fleet.bikes)
    assert skewed >= 1
    assert any(len(b.boots) > 1 for b in faulty_run.fleet.bikes)


def test_the_block_encoder_matches_encode_readings_either_way(clean_run: Simulated) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    kit_id, key = clean_run.fleet.kits[0]
    mine = truth.readings[truth.readings["kit_id"] == kit_id][:40]
    readings = np.zeros(len(mine), READING_DTYPE)
    for name in READING_DTYPE.names or ():
        if name in mine.dtype.names:
            readings[name] = mine[name]
    readings["interval_ms"] = 5000
    assert FrameEncoder().fast
    fast = EncodedBlock(readings, fast=True)
    slow = EncodedBlock(readings, fast=False)
    for a, b in ((0, 10), (10, 20), (3, 40), (39, 40)):
        expected = encode_readings(kit_id, 9, a, readings[a:b], key)
        assert fast.frame(a, b, kit_id=kit_id, boot_id=9, seq=a, key=key) == expected
        assert slow.frame(a, b, kit_id=kit_id, boot_id=9, seq=a, key=key) == expected
