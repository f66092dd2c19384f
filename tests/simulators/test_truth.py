"""The truth record: what end-to-end tests will compare stored aggregates with."""

from __future__ import annotations

from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import pytest

from firmware_protocol.arrays import decode_readings
from simulators.environment import field_mean
from simulators.fleet import Kind
from simulators.truth import EXPECTED_DTYPE, TruthRecord
from simulators.truthflags import TruthFlag
from tests.simulators.simulated import Simulated


def _decoded(sim: Simulated) -> np.ndarray:
    keys = dict(sim.fleet.kits)
    frames = [
        decode_readings(p.payload, keys[p.kit_id]).readings
        for p in sim.publications
        if p.kind == Kind.FRAME
    ]
    return np.concatenate(frames)


@pytest.mark.parametrize("metric", ["pm25_ugm3", "no2_ugm3", "noise_laeq_db"])
def test_expected_aggregates_equal_an_independent_binning_of_the_decoded_frames(
    clean_run: Simulated, metric: str
) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    expected = truth.expected_aggregates(metric, 9, 900, exclude=TruthFlag.WARMING_UP)
    assert expected.dtype == EXPECTED_DTYPE
    got = _decoded(clean_run)
    got = got[(got["status"] & 1) == 0]  # the WARMING_UP status bit
    groups: dict[tuple[int, int], list[float]] = {}
    for row in got:
        # As the pipeline does: the finest cell (res 10), then its parent.
        finest = h3.latlng_to_cell(float(row["lat_deg"]), float(row["lon_deg"]), 10)
        cell = h3.cell_to_parent(finest, 9)
        start = int(row["ts_ms"]) // 900_000 * 900_000
        groups.setdefault((start, cell), []).append(float(row[metric]))
    assert len(expected) == len(groups)
    assert int(expected["n"].sum()) == len(got)
    for row in expected:
        values = groups[(int(row["window_start_ms"]), int(row["cell"]))]
        assert row["n"] == len(values)
        assert row["measured_mean"] == pytest.approx(field_mean(metric, np.array(values)), abs=1e-9)
        assert row["measured_min"] == pytest.approx(min(values))
        assert row["measured_max"] == pytest.approx(max(values))


@pytest.mark.parametrize(
    ("metric", "typical_bound"),
    [("pm25_ugm3", 3.0), ("pm10_ugm3", 6.0), ("no2_ugm3", 12.0), ("noise_laeq_db", 4.0)],
)
def test_measured_means_stay_within_the_stated_bound_of_the_truth(
    faulty_run: Simulated, metric: str, typical_bound: float
) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    expected = truth.expected_aggregates(metric, 9, 3600, privacy_radius_m=100.0)
    assert len(expected) > 20
    miss = np.abs(expected["measured_mean"] - expected["true_mean"]) > expected["error_bound"]
    assert not miss.any(), expected[miss]
    # The bound says something: well under the signal for the cells that matter.
    big = expected[expected["n"] >= 20]
    assert np.median(big["error_bound"]) < typical_bound


def test_exclusions_follow_flags_and_privacy_zones(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    everything = truth.expected_aggregates("pm25_ugm3", 8, 86400, exclude=0)
    default = truth.expected_aggregates("pm25_ugm3", 8, 86400)
    private = truth.expected_aggregates("pm25_ugm3", 8, 86400, privacy_radius_m=300.0)
    r = truth.readings
    positioned = int(np.sum(np.isfinite(r["lat_deg"])))
    assert everything["n"].sum() == positioned
    undeliverable = (r["flags"] & int(TruthFlag.default_excluded())) != 0
    assert default["n"].sum() == int(np.sum(~undeliverable & np.isfinite(r["lat_deg"])))
    near = (r["depot_distance_m"] <= 300.0) & ~undeliverable
    assert near.any()
    assert private["n"].sum() == default["n"].sum() - int(near.sum())


def test_true_values_are_the_field_at_the_true_place_and_time(clean_run: Simulated) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    r = truth.readings[::37]
    env = clean_run.fleet.environment
    for metric in ("pm1_ugm3", "pm25_ugm3", "no2_ugm3", "noise_laeq_db", "humidity_pct"):
        field = env.true_value(metric, r["true_lat_deg"], r["true_lon_deg"], r["true_ts_ms"])
        assert np.allclose(field, r[f"true_{metric}"], rtol=1e-9, atol=1e-6), metric


def test_cell_window_mean_covers_the_whole_cell(clean_run: Simulated) -> None:
    env = clean_run.fleet.environment
    start = clean_run.fleet.config.start_ms
    cell = h3.latlng_to_cell(52.129, 4.656, 8)
    mean = env.cell_window_mean("pm25_ugm3", cell, start, 3600)
    lat, lon = h3.cell_to_latlng(cell)
    samples = env.true_value(
        "pm25_ugm3", np.full(60, lat), np.full(60, lon), start + np.arange(60) * 60_000
    )
    assert 0.5 * samples.min() < mean < 2 * samples.max()
    noise = env.cell_window_mean("noise_laeq_db", cell, start, 3600)
    assert 40 < noise < 80


def test_lookup_and_save_round_trip(clean_run: Simulated, tmp_path: Path) -> None:
    truth = clean_run.run.truth
    assert truth is not None
    some = truth.readings[[0, 5, 17]]
    assert np.array_equal(truth.lookup(some), some)
    bogus = some.copy()
    bogus["seq"] = 999_999
    with pytest.raises(KeyError, match="never produced"):
        truth.lookup(bogus)
    path = tmp_path / "truth.npz"
    truth.save(path)
    again = TruthRecord.load(path)
    assert again.readings.tobytes() == truth.readings.tobytes()
    assert np.array_equal(again.frames, truth.frames)
    assert again.depots_latlon == truth.depots_latlon
    assert again.summary() == truth.summary()


def test_expected_aggregates_over_the_readings_a_pipeline_kept(faulty_run: Simulated) -> None:
    truth = faulty_run.run.truth
    assert truth is not None
    kept = truth.deliverable()
    kept = kept[(kept["flags"] & TruthFlag.WARMING_UP) == 0][::3]  # as some pipeline might
    stored_rows = np.concatenate([kept, kept[:50]])  # a duplicate delivery changes nothing
    expected = truth.expected_aggregates("no2_ugm3", 8, 900, only=stored_rows)
    positioned = kept[np.isfinite(kept["lat_deg"])]
    assert len(positioned) > 1000
    assert expected["n"].sum() == len(positioned)
    overall = np.average(expected["measured_mean"], weights=expected["n"])
    assert overall == pytest.approx(positioned["no2_ugm3"].mean())
