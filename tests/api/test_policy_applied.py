"""Every route takes its privacy rules from the one policy on the app's state.

A policy changed in one place (the state's ``PrivacyPolicy``) changes what every route
lets through: raw exports, fleet health, time-series buckets, cells and /meta. If a
route decided on its own (a role check of its own, a threshold read from elsewhere),
one of these would not follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from api.roles import Role
from tests.api.api_factories import day_range
from tests.api.api_server import ServerThread
from tests.api.conftest import app_at

BBOX = "4.60,52.10,4.70,52.16"


@pytest.fixture
def policed(shared_url: str) -> Iterator[tuple[httpx.Client, ServerThread]]:
    app = app_at(shared_url)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, app.state.api


def _get(client: httpx.Client, path: str, key: str | None, **params: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return client.get(path, params={**day_range(), **params}, headers=headers)


def test_the_routes_follow_the_policy_on_the_state(
    policed: tuple[httpx.Client, object], keys: dict[Role, str]
) -> None:
    client, state = policed
    researcher, officer = keys[Role.RESEARCHER], keys[Role.OFFICER]
    cells = {"metric": "pm25", "bbox": BBOX, "resolution": 10}
    series = {"metric": "pm25", "bbox": BBOX, "resolution": 10, "bucket": "1h"}

    assert _get(client, "/v1/exports/readings", researcher).status_code == 200
    assert _get(client, "/v1/kits", officer).status_code == 200
    assert _get(client, "/v1/timeseries", None, **series).status_code == 200
    public_cells = len(_get(client, "/v1/cells", None, **cells).json()["features"])
    assert public_cells > 0
    assert _get(client, "/v1/meta", None).json()["public_min_rides"] == 3

    stricter = dataclasses.replace(
        state.policy,  # type: ignore[attr-defined]
        raw_roles=frozenset({"admin"}),
        fleet_roles=frozenset({"admin"}),
        public_min_window_s=86_400,
        public_min_rides=1_000,
    )
    state.policy = stricter  # type: ignore[attr-defined]

    refused = _get(client, "/v1/exports/readings", researcher)
    assert refused.status_code == 403, refused.text
    assert _get(client, "/v1/kits", officer).status_code == 403
    assert _get(client, "/v1/timeseries", None, **series).status_code == 403
    assert _get(client, "/v1/timeseries", officer, **series).status_code == 200
    assert _get(client, "/v1/cells", None, **cells).json()["features"] == []
    assert len(_get(client, "/v1/cells", officer, **cells).json()["features"]) >= public_cells
    assert _get(client, "/v1/meta", None).json()["public_min_rides"] == 1_000
