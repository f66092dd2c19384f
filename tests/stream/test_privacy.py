"""Privacy zones and ride-start trimming in the stream core (stream.core.privacy)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bikesense.exceptions import ConfigurationError
from bikesense.settings import load_settings
from firmware_protocol import empty_readings, encode_readings
from stream.core.exceptions import InvalidConfigError
from stream.core.privacy import (
    CircleZone,
    PolygonZone,
    PrivacyConfig,
    in_zones,
    payload_in_zones,
    zones_from_text,
)
from stream.core.process import CoreConfig, process_batch
from stream.core.state import KitStates
from stream.settings import core_config
from tests.stream.stream_factories import AMSTERDAM, T0_MS, riding

#: One degree of longitude at Amsterdam's latitude, in metres.
M_PER_DEG_LON = 111_320 * np.cos(np.radians(AMSTERDAM[0]))
DEPOT = CircleZone("depot", AMSTERDAM[0], AMSTERDAM[1], 200.0)


def test_a_circle_holds_what_is_within_its_radius() -> None:
    lat = np.full(4, AMSTERDAM[0])
    lon = AMSTERDAM[1] + np.array([0.0, 190.0, 210.0, -150.0]) / M_PER_DEG_LON
    assert in_zones(lat, lon, [DEPOT]).tolist() == [True, True, False, True]


def test_a_polygon_holds_its_inside_by_ray_casting() -> None:
    # An L-shaped block: the notch is outside.
    ell = PolygonZone("home", ((0, 0), (0, 2), (1, 2), (1, 1), (2, 1), (2, 0), (0, 0)))
    lat = np.array([0.5, 0.5, 1.5, 1.5, -0.1, 0.5])
    lon = np.array([0.5, 1.5, 0.5, 1.5, 0.5, 2.1])
    assert in_zones(lat, lon, [ell]).tolist() == [True, True, True, False, False, False]


def test_positions_without_a_fix_are_in_no_zone() -> None:
    lat = np.array([np.nan, AMSTERDAM[0]])
    lon = np.array([np.nan, AMSTERDAM[1]])
    assert in_zones(lat, lon, [DEPOT]).tolist() == [False, True]


def test_zones_from_geojson_and_from_a_plain_list() -> None:
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "depot", "radius_m": 150},
                "geometry": {"type": "Point", "coordinates": [4.895, 52.370]},
            },
            {
                "type": "Feature",
                "properties": {"name": "home"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[4.0, 52.0], [4.1, 52.0], [4.1, 52.1], [4.0, 52.0]]],
                },
            },
        ],
    }
    circle, polygon = zones_from_text(json.dumps(geojson))
    assert circle == CircleZone("depot", 52.370, 4.895, 150.0)
    assert isinstance(polygon, PolygonZone)
    assert polygon.vertices == ((52.0, 4.0), (52.0, 4.1), (52.1, 4.1))  # lat, lon; ring opened
    plain = zones_from_text(
        '[{"name": "a", "lat_deg": 52, "lon_deg": 4, "radius_m": 50},'
        ' {"polygon": [[52, 4], [52, 4.1], [52.1, 4.1]]}]'
    )
    assert plain[0] == CircleZone("a", 52.0, 4.0, 50.0)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "Feature"}',
        '[{"name": "a", "lat_deg": 52, "lon_deg": 4, "radius_m": -1}]',
        '[{"name": "a", "lat_deg": 95, "lon_deg": 4, "radius_m": 10}]',
        '[{"polygon": [[52, 4], [52, 4.1]]}]',
        '[{"name": "no radius", "lat_deg": 52}]',
    ],
)
def test_bad_zone_files_raise_one_error_naming_the_problem(text: str) -> None:
    with pytest.raises(InvalidConfigError, match=r"zone|JSON"):
        zones_from_text(text, source="zones.json")


def _config(**privacy: object) -> CoreConfig:
    return CoreConfig(privacy=PrivacyConfig(**privacy))  # type: ignore[arg-type]


def test_zone_readings_are_withheld_and_take_no_part_in_rides_or_state() -> None:
    # A ride leaves the depot: 600 readings, 5 m/s east, the first 40 (200 m) in the zone.
    readings = riding(600)
    out = process_batch(readings, T0_MS + 700_000, {}, _config(zones=(DEPOT,)))
    inside = in_zones(readings["lat_deg"], readings["lon_deg"], [DEPOT])
    assert 35 <= inside.sum() <= 45
    np.testing.assert_array_equal(out.withheld, inside)
    assert out.in_zone == inside.sum()
    stored = out.to_store()
    assert len(stored) == 600 - inside.sum()
    assert not in_zones(stored["lat_deg"], stored["lon_deg"], [DEPOT]).any()
    # The ride starts where the bike left the zone: nothing in the state points inside.
    (span,) = out.states[7].rides
    assert span.start_ms == int(readings["ts_ms"][~inside].min())
    assert out.states[7].qa is not None
    anchor = out.states[7].qa.anchor
    assert (
        anchor is None
        or not in_zones(np.array([anchor.lat_deg]), np.array([anchor.lon_deg]), [DEPOT])[0]
    )


def test_a_batch_entirely_in_a_zone_leaves_no_kit_state() -> None:
    readings = riding(20)  # 100 m: all inside
    out = process_batch(readings, T0_MS + 60_000, {}, _config(zones=(DEPOT,)))
    assert out.withheld.all()
    assert len(out.to_store()) == 0
    assert out.updated == {}


def test_the_first_minutes_of_every_ride_are_trimmed_across_batches() -> None:
    config = _config(trim_start_s=60)
    first = riding(300)
    # The next ride of the same kit, after a gap longer than the ride gap (20 min).
    second = riding(300, t0_ms=T0_MS + 3_600_000, seq0=100)
    states: KitStates = {}
    kept = []
    for part in (first[:30], first[30:], second[:100], second[100:]):  # batches split the rides
        out = process_batch(part, int(part["ts_ms"].max()), states, config)
        states = out.states
        kept.append(out.to_store())
    stored = np.concatenate(kept)
    assert len(stored) == 2 * (300 - 60)
    for start in (T0_MS, T0_MS + 3_600_000):
        in_ride = (stored["ts_ms"] >= start) & (stored["ts_ms"] < start + 300_000)
        assert stored["ts_ms"][in_ride].min() == start + 60_000


def test_without_zones_or_trimming_nothing_is_withheld() -> None:
    readings = riding(100)
    out = process_batch(readings, T0_MS + 200_000, {}, CoreConfig())
    assert not out.withheld.any()
    assert out.to_store() is out.enriched


def test_privacy_config_is_checked() -> None:
    with pytest.raises(InvalidConfigError, match="trim_start_s"):
        PrivacyConfig(trim_start_s=-1)
    assert not PrivacyConfig().active
    assert replace(PrivacyConfig(), zones=(DEPOT,)).active


def test_a_frame_payload_is_checked_for_zone_positions_without_its_key() -> None:
    r = empty_readings(3)
    r["ts_ms"] = T0_MS + np.arange(3) * 1000
    r["lat_deg"] = AMSTERDAM[0]
    r["lon_deg"] = AMSTERDAM[1] + np.array([0.0, 0.01, 0.02])
    r["gnss_fix"] = 2
    inside = encode_readings(7, 1, 1, r, bytes(32))
    r["lon_deg"] += 0.05
    outside = encode_readings(7, 1, 2, r, bytes(32))
    assert payload_in_zones(inside, [DEPOT])
    assert not payload_in_zones(outside, [DEPOT])
    assert not payload_in_zones(inside, [])
    assert not payload_in_zones(b"garbage", [DEPOT])
    # Truncated or otherwise broken frames are read as far as their records go.
    assert payload_in_zones(inside[: 28 + 38 + 5], [DEPOT])
    assert not payload_in_zones(inside[:20], [DEPOT])


def test_the_faust_qa_step_withholds_the_same_readings() -> None:
    from stream.faust_app.codec import (  # noqa: PLC0415 - faust's codec only here
        decode_enriched,
        decode_kit_log,
        encode_readings,
        kit_key,
    )
    from stream.faust_app.steps import qa_step  # noqa: PLC0415

    config = _config(zones=(DEPOT,), trim_start_s=30)
    readings = riding(200)
    received = np.full(len(readings), int(readings["ts_ms"].max()) + 2000)
    outcome = qa_step(encode_readings(readings, received), kit_key(7), None, config, 7, offset=0)
    forwarded = np.concatenate([decode_enriched(value) for _, value in outcome.forwards])
    embedded = process_batch(readings, int(received.max()), {}, config).to_store()
    assert sorted(forwarded["idx"] + 10 * forwarded["seq"]) == sorted(
        embedded["idx"] + 10 * embedded["seq"]
    )
    assert not in_zones(forwarded["lat_deg"], forwarded["lon_deg"], [DEPOT]).any()
    assert outcome.state is not None
    state = decode_kit_log(outcome.state).before(1)
    assert state is not None
    assert state.rides[0].start_ms > T0_MS
    # A message entirely inside the zone forwards nothing and leaves the state alone.
    inside = riding(20, seq0=500)
    inside_received = np.full(20, int(inside["ts_ms"].max()) + 2000)
    quiet = qa_step(
        encode_readings(inside, inside_received), kit_key(7), outcome.state, config, 7, offset=1
    )
    assert quiet.forwards == ()
    assert quiet.state is None


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=20))
def test_any_bytes_get_an_answer_never_an_error(payload: bytes, at: int) -> None:
    # Random bytes, and a real header followed by random bytes.
    header = encode_readings(7, 1, 1, empty_readings(1), bytes(32))[:at]
    for blob in (payload, header + payload):
        assert payload_in_zones(blob, [DEPOT]) in {True, False}


def test_the_settings_name_a_zones_file_and_a_trim(tmp_path: Path) -> None:
    zones = tmp_path / "zones.json"
    zones.write_text('[{"name": "depot", "lat_deg": 52.37, "lon_deg": 4.895, "radius_m": 250}]')
    config = core_config(load_settings(zones_file=zones, trim_start_s=120))
    assert config.privacy == PrivacyConfig(
        zones=(CircleZone("depot", 52.37, 4.895, 250.0),), trim_start_s=120.0
    )
    assert core_config(load_settings()).privacy == PrivacyConfig()
    with pytest.raises(ConfigurationError, match=r"BIKESENSE_PRIVACY_ZONES_FILE.*cannot read"):
        core_config(load_settings(zones_file=tmp_path / "missing.json"))
    zones.write_text("{}")
    with pytest.raises(ConfigurationError, match=r"ZONES_FILE.*FeatureCollection"):
        core_config(load_settings(zones_file=zones))
