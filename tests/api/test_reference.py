"""GET /v1/reference/stations and /v1/reference/values: public official data.

The reference hours are fixed historic ones (docs/examples, March 2024), asked for
with explicit ``from`` and ``to``: nothing depends on the day the tests run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from api.reference import ReferenceMetric
from api.roles import Role
from storage.reference import store_reference
from storage.reference_file import REFERENCE_METRICS
from storage.reference_formats import parse_reference

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


@pytest.fixture
def client_with_reference(
    make_client: Callable[..., httpx.Client], seeded_url: str
) -> httpx.Client:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        store_reference(conn, parse_reference((EXAMPLES / "reference.csv").read_bytes()))
    return make_client()


def test_the_api_metrics_are_the_reference_metrics() -> None:
    assert {m.metric for m in ReferenceMetric} == set(REFERENCE_METRICS)


def test_the_public_lists_stations_with_their_periods(client_with_reference: httpx.Client) -> None:
    response = client_with_reference.get("/v1/reference/stations")
    assert response.status_code == 200, response.text
    stations = response.json()["stations"]
    assert [s["station_id"] for s in stations] == ["NL99901", "NL99902"]
    first = stations[0]
    assert (first["name"], first["lat"], first["lon"]) == (
        "Voorbeeldstad-Stationsplein",
        52.0893,
        5.1105,
    )
    assert first["metrics"] == [
        {
            "metric": "pm25",
            "time_from": "2024-03-05T08:00:00Z",
            "time_to": "2024-03-05T10:00:00Z",
            "hours": 2,
            "valid_hours": 1,
        },
        {
            "metric": "no2",
            "time_from": "2024-03-05T08:00:00Z",
            "time_to": "2024-03-05T10:00:00Z",
            "hours": 2,
            "valid_hours": 2,
        },
    ]


def test_no_stations_is_an_empty_list(client: httpx.Client) -> None:
    response = client.get("/v1/reference/stations")
    assert response.status_code == 200
    assert response.json() == {"stations": []}


def test_the_public_reads_hourly_values_in_a_range(client_with_reference: httpx.Client) -> None:
    response = client_with_reference.get(
        "/v1/reference/values",
        params={
            "station": "NL99901",
            "metric": "pm25",
            "from": "2024-03-05T00:00:00Z",
            "to": "2024-03-06T00:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["station"]["station_id"] == "NL99901"
    assert (body["metric"], body["unit"]) == ("pm25", "µg/m³")
    assert body["values"] == [
        {"hour_start": "2024-03-05T08:00:00Z", "value": 9.2, "valid": True},
        {"hour_start": "2024-03-05T09:00:00Z", "value": None, "valid": False},
    ]
    # Hours that start in [from, to): 09:00 starts at `to`, so it is left out.
    narrow = client_with_reference.get(
        "/v1/reference/values",
        params={
            "station": "NL99901",
            "metric": "pm25",
            "from": "2024-03-05T08:00:00Z",
            "to": "2024-03-05T09:00:00Z",
        },
    ).json()
    assert [v["hour_start"] for v in narrow["values"]] == ["2024-03-05T08:00:00Z"]


def test_keyed_roles_read_the_same(
    client_with_reference: httpx.Client, own_keys: dict[Role, str]
) -> None:
    params = {"station": "NL99902", "metric": "pm10", "from": "2024-03-05", "to": "2024-03-06"}
    public = client_with_reference.get("/v1/reference/values", params=params).json()
    for role in (Role.OFFICER, Role.RESEARCHER, Role.ADMIN):
        keyed = client_with_reference.get(
            "/v1/reference/values", params=params, headers={"X-API-Key": own_keys[role]}
        )
        assert keyed.json() == public


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"station": "NL00000", "metric": "no2"}, 404, "station"),
        ({"station": "NL 1", "metric": "no2"}, 422, "station"),
        ({"station": "NL99901", "metric": "noise"}, 422, "metric"),
        ({"metric": "no2"}, 422, "station"),
        (
            {"station": "NL99901", "metric": "no2", "from": "2024-03-06", "to": "2024-03-05"},
            422,
            "from",
        ),
        (
            {"station": "NL99901", "metric": "no2", "from": "2023-01-01", "to": "2024-03-05"},
            422,
            "from",
        ),
    ],
)
def test_bad_requests_name_the_parameter(
    client_with_reference: httpx.Client, params: dict[str, str], status: int, parameter: str
) -> None:
    response = client_with_reference.get("/v1/reference/values", params=params)
    assert response.status_code == status, response.text
    assert [d["parameter"] for d in response.json()["detail"]] == [parameter]
