"""process_batch: the one entry point; same result however in-order data is batched."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocol.readings import READING_DTYPE
from stream.core.aggregate import merge_partials
from stream.core.batch import ENRICHED_DTYPE
from stream.core.binning import cells_at
from stream.core.exceptions import InvalidBatchError, InvalidConfigError
from stream.core.process import CoreConfig, aggregate_new_rows, process_batch
from stream.core.state import KitState
from tests.stream.stream_factories import T0_MS, riding

CONFIG = CoreConfig()


def fleet(seed: int) -> np.ndarray:
    """Three kits over a morning, with the troubles QA exists for, in arrival order."""
    rng = np.random.default_rng(seed)
    parts = []
    for kit in (1, 2, 3):
        n = int(rng.integers(50, 400))
        r = riding(
            n,
            kit_id=kit,
            seed=seed + kit,
            seq0=int(rng.choice([0, 30])),
            t0_ms=T0_MS + int(rng.integers(0, 600_000)),
        )
        gap_at = int(rng.integers(0, n))
        r["ts_ms"][gap_at:] += int(rng.choice([0, 25 * 60_000]))  # sometimes a ride gap
        r["boot_id"][int(rng.integers(0, n)) :] += int(rng.integers(0, 2))  # sometimes a reboot
        jumps = rng.random(n) < 0.03
        r["lon_deg"][jumps] += rng.uniform(0.001, 0.02, jumps.sum())
        stuck_from = int(rng.integers(0, n))
        r["noise_laeq_db"][stuck_from:] = 58.0
        r["noise_lamax_db"][stuck_from:] = 60.0
        r["gnss_fix"][rng.random(n) < 0.02] = 0
        r["humidity_pct"][rng.random(n) < 0.1] = 90.0
        parts.append(r)
    readings = np.concatenate(parts)
    return readings[np.argsort(readings["ts_ms"], kind="stable")]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.floats(0, 1), max_size=6))
def test_in_order_data_gets_the_same_enrichment_however_batched(
    seed: int, cuts: list[float]
) -> None:
    readings = fleet(seed)
    received = int(readings["ts_ms"].max()) + 1000
    whole = process_batch(readings, received, {}, CONFIG)
    bounds = sorted({0, len(readings), *(int(c * len(readings)) for c in cuts)})
    states: dict[int, KitState] = {}
    parts = []
    for a, b in itertools.pairwise(bounds):
        out = process_batch(readings[a:b], received, states, CONFIG)
        states = out.states
        parts.append(out.enriched)
    batched = np.concatenate(parts)
    for name in ("qa_flags", "ride_id", "cell"):
        np.testing.assert_array_equal(batched[name], whole.enriched[name], err_msg=name)
    assert states == whole.states
    pw, prw = aggregate_new_rows(whole.enriched, CONFIG)
    pb = np.concatenate([aggregate_new_rows(p, CONFIG)[0] for p in parts])
    np.testing.assert_array_equal(merge_partials(pb)["hist"], merge_partials(pw)["hist"])
    assert len(prw) > 0


def test_output_keeps_input_order_and_fills_everything() -> None:
    readings = fleet(1)
    shuffled = readings[np.random.default_rng(0).permutation(len(readings))]
    out = process_batch(shuffled, int(readings["ts_ms"].max()), {}, CONFIG)
    assert out.enriched.dtype == ENRICHED_DTYPE
    for name in READING_DTYPE.names or ():
        np.testing.assert_array_equal(out.enriched[name], shuffled[name])
    assert np.all(out.enriched["ride_id"] > 0)
    placed = out.enriched["cell"] != 0
    expected = cells_at(shuffled["lat_deg"][placed], shuffled["lon_deg"][placed], 10)
    np.testing.assert_array_equal(out.enriched["cell"][placed], expected)
    assert set(out.updated) == {1, 2, 3}


def test_states_given_are_not_changed() -> None:
    first = process_batch(riding(10), T0_MS + 20_000, {}, CONFIG)
    before = dict(first.states)
    process_batch(riding(10, t0_ms=T0_MS + 10_000, seq0=1), T0_MS + 30_000, first.states, CONFIG)
    assert first.states == before


def test_an_empty_batch_changes_nothing() -> None:
    out = process_batch(np.zeros(0, READING_DTYPE), T0_MS, {}, CONFIG)
    assert len(out.enriched) == 0
    assert out.states == {}


def test_wrong_input_is_refused() -> None:
    with pytest.raises(InvalidBatchError, match="missing fields"):
        process_batch(np.zeros(3, dtype=[("kit_id", "u4")]), T0_MS, {}, CONFIG)
    with pytest.raises(InvalidConfigError):
        CoreConfig(window_sizes_s=(61,))
    with pytest.raises(InvalidConfigError):
        CoreConfig(day_tz="Nowhere/Special")
    assert CoreConfig(resolutions=(10, 7, 7)).resolutions == (7, 10)
