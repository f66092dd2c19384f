"""GET /v1/cells against the real database: statistics, privacy, honesty about thin data."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest

from api.roles import Role
from api.stats import INTRA_RIDE_CORRELATION, effective_n, t975
from stream.core.partials import Metric
from tests.api.api_factories import BUSY, QUIET, SPARSE, day_range, h3_hex

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
    # The interval counts 480 readings of 4 rides as fewer than 480 independent ones
    # (api.stats: Kish's design effect), on the log scale, rounded outward to 0.1.
    n_eff = float(
        effective_n(np.array([480]), np.array([4]), INTRA_RIDE_CORRELATION[Metric.PM25])[0]
    )
    assert 4 < n_eff < 480
    log_half = (
        float(t975(np.array([int(n_eff) - 1]))[0]) * props["std"] / props["mean"] / np.sqrt(n_eff)
    )
    assert props["ci95_low"] == pytest.approx(props["mean"] * np.exp(-log_half), abs=0.15)
    assert props["ci95_high"] == pytest.approx(props["mean"] * np.exp(log_half), abs=0.15)
    assert props["interval_reason"] is None
    assert props["band"] == "Fair"
    assert props["colour"] == "#50CCAA"
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(ring) == 7


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
