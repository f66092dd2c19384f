"""QA with a kit's history: jumps, warm-up, stuck sensors, and state carried across batches."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.batch import enrich
from stream.core.exceptions import InvalidBatchError
from stream.core.kitqa import apply_qa
from stream.core.process import CoreConfig, ProcessedBatch, process_batch
from stream.core.qa import QaConfig, QaFlag
from stream.core.state import KitState
from tests.stream.stream_factories import riding

CONFIG = CoreConfig()
METRES_PER_DEG_LON = 111_320 * np.cos(np.radians(52.37))


def run(readings: np.ndarray, states: dict[int, KitState] | None = None) -> ProcessedBatch:
    return process_batch(readings, int(readings["ts_ms"].max()) + 1000, states or {}, CONFIG)


def flagged(batch: ProcessedBatch, flag: QaFlag) -> list[int]:
    return np.flatnonzero(batch.enriched["qa_flags"] & np.uint32(int(flag))).tolist()


def shift_east(readings: np.ndarray, rows: slice | list[int], metres: float) -> None:
    readings["lon_deg"][rows] += metres / METRES_PER_DEG_LON


def test_a_200_kmh_spike_is_flagged_and_the_track_resumes() -> None:
    r = riding(60, seq0=50)
    # 1 s after reading 29, reading 30 is 55.6 m further than the bike went: 200 km/h.
    shift_east(r, [30], 200 / 3.6)
    batch = run(r)
    assert flagged(batch, QaFlag.POSITION_JUMP) == [30]
    assert batch.enriched["qa_flags"][31:].tolist() == [0] * 29


def test_an_excursion_is_flagged_until_the_track_comes_back() -> None:
    r = riding(60, seq0=50)
    shift_east(r, slice(30, 40), 400)  # ten seconds between tall buildings, 400 m off
    assert flagged(run(r), QaFlag.POSITION_JUMP) == list(range(30, 40))


def test_a_bad_first_fix_is_given_up_after_the_reanchor_time() -> None:
    r = riding(60, seq0=50)
    shift_east(r, [0], 2000)
    # Readings from 1 on look like jumps from the bad anchor; 30 s after the first
    # rejection (reading 31) the filter trusts the track again.
    assert flagged(run(r), QaFlag.POSITION_JUMP) == list(range(1, 31))


def test_a_jump_right_after_a_batch_boundary_is_caught_from_the_state() -> None:
    r = riding(60, seq0=50)
    shift_east(r, [30], 200 / 3.6)
    first = run(r[:30])
    second = run(r[30:], first.states)
    assert flagged(second, QaFlag.POSITION_JUMP) == [0]


def test_positions_without_a_fix_are_not_jumps() -> None:
    r = riding(20, seq0=50)
    r["gnss_fix"][10] = 0
    shift_east(r, [10], 5000)
    batch = run(r)
    assert flagged(batch, QaFlag.POSITION_JUMP) == []
    assert flagged(batch, QaFlag.NO_FIX) == [10]
    assert batch.enriched["cell"][10] == 0


def test_the_first_minute_after_boot_is_warm_up() -> None:
    r = riding(120, seq0=0)  # frame 0 present: the boot is seen
    batch = run(r)
    assert flagged(batch, QaFlag.WARMING_UP) == list(range(60))
    assert flagged(batch, QaFlag.NO2_WARMING_UP) == list(range(120))  # NO2 settles for 10 min


def test_warm_up_is_remembered_across_batches() -> None:
    r = riding(120, seq0=0)
    first = run(r[:10])
    second = run(r[10:], first.states)
    assert flagged(second, QaFlag.WARMING_UP) == list(range(50))


def test_without_frame_0_only_the_kit_can_say_it_is_warming_up() -> None:
    r = riding(30, seq0=40)
    r["status"][5] = 1  # StatusBits.WARMING_UP
    assert flagged(run(r), QaFlag.WARMING_UP) == [5]


def test_a_stuck_noise_module_is_flagged_after_two_minutes() -> None:
    r = riding(300, seq0=50)
    r["noise_laeq_db"][100:] = 61.3
    r["noise_lamax_db"][100:] = 64.0
    batch = run(r)
    # Run starts at reading 100; 120 s later (reading 220) it counts as stuck.
    assert flagged(batch, QaFlag.NOISE_STUCK) == list(range(220, 300))
    assert flagged(batch, QaFlag.PM_STUCK) == []


def test_a_stuck_sensor_run_continues_across_batches() -> None:
    r = riding(300, seq0=50)
    r["noise_laeq_db"][100:] = 61.3
    r["noise_lamax_db"][100:] = 64.0
    whole = run(r)
    states: dict[int, KitState] = {}
    flags = []
    for part in np.array_split(r, 7):
        out = run(part, states)
        states = out.states
        flags.append(out.enriched["qa_flags"])
    assert np.concatenate(flags).tolist() == whole.enriched["qa_flags"].tolist()


def test_a_stuck_pm_sensor_is_flagged_after_fifteen_minutes() -> None:
    r = riding(1000, seq0=50)
    for col in ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3"):
        r[col] = 3.0
    assert flagged(run(r), QaFlag.PM_STUCK) == list(range(900, 1000))


def test_repeated_values_are_not_stuck_if_they_are_absent() -> None:
    r = riding(300, seq0=50)
    r["noise_laeq_db"] = np.nan
    r["noise_lamax_db"] = np.nan
    assert flagged(run(r), QaFlag.NOISE_STUCK) == []


def test_humid_air_flags_pm() -> None:
    r = riding(10, seq0=50)
    r["humidity_pct"][3:6] = 82.0
    assert flagged(run(r), QaFlag.HUMID_PM) == [3, 4, 5]


def test_late_data_does_not_move_the_kit_state_back() -> None:
    now = riding(30, t0_ms=riding(1)["ts_ms"][0] + 3_600_000, seq0=500)
    first = run(now)
    late = run(riding(30, seq0=50), first.states)
    assert late.states[7].qa == first.states[7].qa
    assert len(late.states[7].rides) == 2


def test_apply_qa_refuses_unsorted_readings() -> None:
    r = enrich(riding(5, seq0=50), received_ms=0)
    with pytest.raises(InvalidBatchError, match="sorted"):
        apply_qa(r[::-1], {}, QaConfig())
