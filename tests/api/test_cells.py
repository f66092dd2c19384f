"""GET /v1/cells against the real database: statistics, privacy, honesty about thin data."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest
from h3.api import basic_int as h3int

from api.models import CellCollection
from api.roles import Role
from api.stats import SIMULATED_FLEET
from storage.selection import BBox
from storage.withheld import WITHHELD_RESOLUTION, withheld_districts
from stream.core.partials import Metric
from tests.api.api_factories import (
    BUSY,
    QUIET,
    SPARSE,
    T0_MS,
    day_range,
    h3_hex,
    ride,
    write,
)

BBOX = "4.60,52.10,4.70,52.16"


def _cells(client: httpx.Client, key: str | None = None, **params: object) -> dict[str, dict]:
    headers = {"X-API-Key": key} if key else {}
    response = client.get(
        "/v1/cells",
        params={"metric": "pm25", "bbox": BBOX, "resolution": 10, **day_range(), **params},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "FeatureCollection"
    return {f["id"]: f for f in body["features"]}


def test_the_public_sees_only_cells_with_k_rides(client: httpx.Client) -> None:
    cells = _cells(client)
    assert h3_hex(BUSY, 10) in cells  # 4 rides in the hour
    assert h3_hex(SPARSE, 10) in cells  # 3 rides: k = 3 is met
    assert h3_hex(QUIET, 10) not in cells  # 2 rides: absent, not zero


def test_officers_see_every_cell(client: httpx.Client, keys: dict[Role, str]) -> None:
    cells = _cells(client, keys[Role.OFFICER])
    assert {h3_hex(BUSY, 10), h3_hex(QUIET, 10), h3_hex(SPARSE, 10)} <= set(cells)
    quiet = cells[h3_hex(QUIET, 10)]["properties"]
    assert quiet["rides"] == 2
    assert quiet["mean"] == pytest.approx(30.0, abs=0.2)
    assert quiet["band"] == "Moderate"


def test_k_is_a_setting(make_client: Callable[..., httpx.Client]) -> None:
    cells = _cells(make_client(public_min_rides=5))
    assert cells == {}


def test_statistics_of_a_cell(client: httpx.Client) -> None:
    feature = _cells(client)[h3_hex(BUSY, 10)]
    props = feature["properties"]
    assert props["status"] == "ok"
    assert props["n_readings"] == 480
    assert props["rides"] == 4
    assert props["days"] == 1
    assert props["unit"] == "µg/m³"
    assert props["mean"] == pytest.approx(8.0, abs=0.1)
    assert 0.3 < props["std"] < 0.7
    assert props["min"] < props["p50"] < props["p95"] < props["max"]
    for name in ("p50", "p95"):  # a stated bound, at most the data's range
        assert 0 < props[f"{name}_error_bound"] <= props["max"] - props["min"] + 0.1
    # The interval is the kits' error budget (api.stats): 4 rides of 120 readings each
    # average the kits' own errors as 4 equal rides (Kish), the readings' random error
    # as 480; no humid air (60 % RH). 95 %, rounded to the nearest 0.1.
    kit = SIMULATED_FLEET.kits[Metric.PM25]
    mean = props["mean"]
    u = np.sqrt(
        (kit.kit_sd**2 + (kit.kit_gain_sd * mean) ** 2) / 4
        + (kit.reading_sd + kit.reading_rel_sd * mean) ** 2 / 480
    )
    assert props["ci95_low"] == pytest.approx(mean - 1.96 * u, abs=0.15)
    assert props["ci95_high"] == pytest.approx(mean + 1.96 * u, abs=0.15)
    assert props["interval_reason"] is None
    assert props["band"] == "Fair"
    assert props["colour"] == "#50CCAA"
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(ring) == 7


@pytest.mark.parametrize("metric", ["pm25", "noise", "no2"])
def test_the_body_is_what_the_response_model_gives(
    client: httpx.Client, keys: dict[Role, str], metric: str
) -> None:
    # The features are built as dicts, not models (api.aggregates.cell_features): the
    # body must be valid for the model and be exactly what the model serialises.
    for key in (None, keys[Role.OFFICER]):
        response = client.get(
            "/v1/cells",
            params={"metric": metric, "bbox": BBOX, "resolution": 10, **day_range()},
            headers={"X-API-Key": key} if key else {},
        )
        assert response.status_code == 200, response.text
        model = CellCollection.model_validate_json(response.content)
        assert model.features
        assert model.model_dump_json(by_alias=True).encode() == response.content


def test_thin_cells_are_marked_insufficient_not_clean(client: httpx.Client) -> None:
    props = _cells(client)[h3_hex(SPARSE, 10)]["properties"]
    assert props["status"] == "insufficient"
    assert props["n_readings"] == 9
    assert props["band"] is None
    assert props["colour"] is None


def test_noise_is_averaged_on_energy(client: httpx.Client) -> None:
    props = _cells(client, metric="noise")[h3_hex(BUSY, 10)]["properties"]
    # Two rides at 60 dB and two at 80 dB, equal time: LAeq 77.0 dB, not 70.
    assert props["laeq_db"] == pytest.approx(77.0, abs=0.05)
    assert props["mean"] == pytest.approx(70.0, abs=0.05)
    assert props["ci95_low"] < props["laeq_db"] < props["ci95_high"]  # the interval of LAeq
    assert props["ci95_low"] > 70.0
    assert props["lamax_db"] == pytest.approx(86.0)
    assert props["band"] == "≥ 75"
    assert props["unit"] == "dB(A)"


def test_the_response_says_what_it_covers(client: httpx.Client) -> None:
    response = client.get(
        "/v1/cells",
        params={
            "metric": "pm25",
            "bbox": BBOX,
            "from": "2026-11-21T08:20:00Z",
            "to": "2026-11-21T09:10:00Z",
        },
    )
    body = response.json()
    assert body["window_s"] == 3600  # the public never sees finer windows
    assert body["time_from"] == "2026-11-21T08:00:00Z"
    assert body["time_to"] == "2026-11-21T10:00:00Z"
    assert body["resolution"] == 9
    assert body["role"] == "public"
    assert "indicative" in body["note"]


def test_a_range_without_an_end_ends_at_the_api_s_now(client: httpx.Client) -> None:
    # The API's now is NOW, 2026-11-23 12:00 (conftest.py); the range ends at the next
    # minute, widened to the public's hour windows.
    body = client.get(
        "/v1/cells",
        params={"metric": "pm25", "bbox": BBOX, "resolution": 10, "from": "2026-11-21T00:00:00Z"},
    ).json()
    assert body["time_to"] == "2026-11-23T13:00:00Z"
    assert h3_hex(BUSY, 10) in {f["id"] for f in body["features"]}
    # Without `from` either: the last 24 hours, which hold none of the scenario's rides.
    last_day = client.get("/v1/cells", params={"metric": "pm25", "bbox": BBOX}).json()
    assert (last_day["time_from"], last_day["time_to"]) == (
        "2026-11-22T12:00:00Z",
        "2026-11-23T13:00:00Z",
    )
    assert last_day["features"] == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"bbox": "5,52,4,53"}, "bbox"),
        ({"bbox": "a,b,c,d"}, "bbox"),
        ({"bbox": "4,52,5,95"}, "bbox"),
        ({"bbox": "-170,-80,170,80"}, "bbox"),
        ({"metric": "co2"}, "metric"),
        ({"resolution": 3}, "resolution"),
        ({"resolution": 99}, "resolution"),
        ({"from": "2026-11-22T00:00:00Z", "to": "2026-11-21T00:00:00Z"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "1900-01-01T00:00:00Z"}, "from"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ],
)
def test_bad_parameters_say_which_and_why(
    client: httpx.Client, params: dict[str, object], parameter: str
) -> None:
    response = client.get("/v1/cells", params={"metric": "pm25", "bbox": BBOX, **params})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "bad_parameter"
    assert [d["parameter"] for d in body["detail"]] == [parameter]
    assert body["detail"][0]["message"]


# ---------------------------------------------------------------- withheld for privacy

#: A street block in a district of its own (H3 resolution 7), away from the scenario's.
LONE = (52.1500, 4.6900)


def _lone_rides(n: int) -> list[np.ndarray]:
    """``n`` rides through LONE on the scenario's day, two hours apart: one ride a unit."""
    return [
        ride(
            kit_id=20 + k,
            ride_id=900 + k,
            start=LONE,
            n=60,
            seed=k,
            boot_id=9,
            t0_ms=T0_MS + (2 + 2 * k) * 3_600_000,
        )
        for k in range(n)
    ]


def _around(point: tuple[float, float], d: float) -> str:
    return f"{point[1] - d},{point[0] - d},{point[1] + d},{point[0] + d}"


def _view(client: httpx.Client, key: str | None = None, **params: object) -> dict:
    headers = {"X-API-Key": key} if key else {}
    response = client.get(
        "/v1/cells",
        params={"metric": "pm25", "bbox": BBOX, "resolution": 10, **day_range(), **params},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_public_is_told_that_data_was_withheld(
    seeded_url: str, make_client: Callable[..., httpx.Client], own_keys: dict[Role, str]
) -> None:
    # Three rides through LONE, each alone in its hour: no unit reaches k = 3, the
    # district-day holds three rides. The public sees no cell, and that data was withheld.
    write(seeded_url, _lone_rides(3))
    client = make_client()
    body = _view(client, bbox=_around(LONE, 0.01))
    assert body["features"] == []
    assert body["withheld"] is True
    # A flag for the whole district-day, never per cell or hour: a view of one block and
    # one hour says the same with a ride in that hour or without one.
    tiny = _around(LONE, 0.0005)
    with_ride = {"from": "2026-11-21T10:00:00Z", "to": "2026-11-21T11:00:00Z"}
    without = {"from": "2026-11-21T20:00:00Z", "to": "2026-11-21T21:00:00Z"}
    assert _view(client, bbox=tiny, **with_ride)["withheld"] is True
    assert _view(client, bbox=tiny, **without)["withheld"] is True
    # Another day: nothing withheld, so "no data" is what it is.
    other_day = {"from": "2026-11-22T00:00:00Z", "to": "2026-11-23T00:00:00Z"}
    assert _view(client, bbox=_around(LONE, 0.01), **other_day)["withheld"] is False
    # Nothing is withheld from an officer, who sees the cell.
    officer = _view(client, own_keys[Role.OFFICER], bbox=_around(LONE, 0.01))
    assert officer["withheld"] is False
    assert h3_hex(LONE, 10) in {f["id"] for f in officer["features"]}


def test_fewer_than_k_withheld_rides_are_not_told(
    seeded_url: str, make_client: Callable[..., httpx.Client]
) -> None:
    # Two rides through LONE: the flag itself would speak of fewer than k rides, so it
    # stays false, as for the scenario's QUIET (two rides in its block-hour).
    write(seeded_url, _lone_rides(2))
    client = make_client()
    assert _view(client, bbox=_around(LONE, 0.01))["withheld"] is False
    assert h3_hex(QUIET, 10) not in {f["id"] for f in _view(client)["features"]}
    assert _view(client)["withheld"] is False
    # With k = 2 they are enough to be told of (each unit has one ride, the district-day
    # two), and still no cell is shown.
    body = _view(make_client(public_min_rides=2), bbox=_around(LONE, 0.01))
    assert body["features"] == []
    assert body["withheld"] is True


def test_a_view_is_judged_by_every_district_it_overlaps() -> None:
    # A view whose corners and centre all lie in other districts, and which holds no
    # district's centre near BUSY, still counts BUSY's district (the map's view in
    # test_browser.py, where this was missed).
    bbox = BBox(4.63596, 52.12214, 4.69604, 52.14585)
    districts = set(withheld_districts(bbox))
    assert h3int.latlng_to_cell(*BUSY, WITHHELD_RESOLUTION) in districts
    inside = np.stack(
        np.meshgrid(np.linspace(52.12214, 52.14585, 40), np.linspace(4.63596, 4.69604, 40)), -1
    )
    for lat, lon in inside.reshape(-1, 2):
        assert h3int.latlng_to_cell(lat, lon, WITHHELD_RESOLUTION) in districts
