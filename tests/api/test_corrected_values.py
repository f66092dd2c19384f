"""``values=corrected`` on cells, time series and tiles, and the public's k on corrected values.

The fleet of tests/storage/calibration_data.py (three kits with known PM2.5 errors, a
reference station) goes through the batch writer into real PostgreSQL, is calibrated
with ``storage.calibration_run.run_fit`` as ``bikesense calibration fit`` does, and is
read through a real API server. One more ride, alone in a sibling cell of PLACE's
resolution-9 parent, is what the public must never see, corrected or raw.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import h3.api.basic_int as h3i
import httpx
import psycopg
import pytest

from api.keys import create_key
from api.roles import Role
from api.stats import mean_interval
from storage.calibration_run import run_fit
from storage.cell_stats import cell_stats
from storage.selection import BBox, Selection
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.calibration_fit import FitConfig
from stream.core.partials import Metric
from tests.api.api_factories import RESOLUTIONS, WINDOWS, ride
from tests.api.api_server import ServerThread
from tests.api.conftest import app_at
from tests.storage.calibration_data import (
    DAY0,
    DAY0_MS,
    DAYS,
    HOUR_MS,
    PLACE,
    PLACE_CELL,
    place_truth,
    write_all,
)

pytestmark = pytest.mark.postgres

PARENT = h3i.cell_to_parent(PLACE_CELL, 9)
LONE_CELL = next(c for c in sorted(h3i.cell_to_children(PARENT, 10)) if c != PLACE_CELL)
#: Around PLACE; the station, 1 km south, is outside.
BBOX = f"{PLACE[1] - 0.005},{PLACE[0] - 0.004},{PLACE[1] + 0.005},{PLACE[0] + 0.004}"
HOUR10 = {"from": "2026-11-21T10:00:00Z", "to": "2026-11-21T11:00:00Z"}


@pytest.fixture(scope="module")
def calibrated(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """The fleet, one lone ride, calibrated; a database for this module's reads."""
    from tests.conftest import cloned_database  # noqa: PLC0415

    with cloned_database(postgres_url, migrated_template) as url:
        write_all(url)
        lone = ride(
            kit_id=11,
            ride_id=7777,
            start=h3i.cell_to_latlng(LONE_CELL),
            n=20,
            t0_ms=DAY0_MS + 10 * HOUR_MS + 2_700_000,
            step_ms=10_000,
            seq0=80_000,
        )
        lone["pm25_ugm3"] = 60.0
        agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
        with psycopg.connect(url, autocommit=True) as conn:
            write_batch(conn, lone, agg)
            run_fit(
                conn,
                DAY0,
                DAYS[-1] + timedelta(days=1),
                resolutions=RESOLUTIONS,
                window_sizes_s=WINDOWS,
                step_days=1,
                fit=FitConfig(window_days=1),
                metrics=("pm25_ugm3",),
            )
        yield url


@pytest.fixture(scope="module")
def server(calibrated: str) -> Iterator[ServerThread]:
    with ServerThread(app_at(calibrated)) as s:
        yield s


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def officer(calibrated: str) -> dict[str, str]:
    with psycopg.connect(calibrated, autocommit=True) as conn:
        return {"X-API-Key": create_key(conn, Role.OFFICER, label="officer").token}


def _cells(client: httpx.Client, res: int, **params: Any) -> dict[str, Any]:
    r = client.get(
        "/v1/cells",
        params={"metric": "pm25", "bbox": BBOX, "resolution": res, **HOUR10, **params},
        headers=params.pop("headers", None),
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_cells_corrected_are_near_the_truth_and_say_which_corrections(
    client: httpx.Client, calibrated: str
) -> None:
    raw = _cells(client, 10)
    corrected = _cells(client, 10, values="corrected")
    assert raw["corrections"] == {"values": "raw", "versions": []}
    assert corrected["corrections"]["values"] == "corrected"
    with psycopg.connect(calibrated) as conn:
        versions = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT version FROM calibration_periods"
                " WHERE valid_from = '2026-11-21' ORDER BY 1"
            ).fetchall()
        ]
    assert corrected["corrections"]["versions"] == versions
    assert len(versions) == 3  # one per kit
    place = format(PLACE_CELL, "x")
    (r,) = [f["properties"] for f in raw["features"] if f["id"] == place]
    (c,) = [f["properties"] for f in corrected["features"] if f["id"] == place]
    assert r["cell"] == c["cell"] == format(PLACE_CELL, "x")
    assert r["n_readings"] == c["n_readings"] == 90
    truth = place_truth(0, 10)
    assert abs(c["mean"] - truth) < 0.3 < 1.0 < abs(r["mean"] - truth)
    assert c["ci95_low"] <= c["mean"] <= c["ci95_high"]


def test_the_interval_of_a_corrected_mean_includes_the_corrections_uncertainty(
    calibrated: str,
) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    start = datetime(2026, 11, 21, 10, tzinfo=UTC)
    sel = Selection(Metric.PM25, 10, 3600, start, start + timedelta(hours=1), corrected=True)
    box = BBox(PLACE[1] - 0.01, PLACE[0] - 0.01, PLACE[1] + 0.01, PLACE[0] + 0.01)
    with psycopg.connect(calibrated) as conn:
        stats = cell_stats(conn, sel, box)
    stats = stats[stats["cell"] == PLACE_CELL]
    u = float(stats["correction_u"][0])
    assert 0 < u < 1
    with_u = mean_interval(stats, Metric.PM25)
    without = stats.copy()
    without["correction_u"] = 0.0  # corrected, as if the correction were exact
    no_u = mean_interval(without, Metric.PM25)
    assert with_u.high[0] - with_u.low[0] > no_u.high[0] - no_u.low[0]
    # At least the correction's own ±1.96 u (the readings' random error only widens it),
    # around the corrected mean itself: the kits' errors, humidity and temperature are
    # what the correction removed (api.stats).
    assert with_u.high[0] - with_u.low[0] > 2 * 1.96 * u * 0.99
    centre = (with_u.low[0] + with_u.high[0]) / 2
    assert centre == pytest.approx(float(stats["mean"][0]))


def test_the_public_k_applies_to_corrected_values_as_to_raw(
    client: httpx.Client, officer: dict[str, str]
) -> None:
    lone = format(LONE_CELL, "x")
    for values in ("raw", "corrected"):
        seen = _cells(client, 10, values=values, headers=officer)
        assert lone in {f["id"] for f in seen["features"]}, values  # it is there ...
        public = _cells(client, 10, values=values)
        assert lone not in {f["id"] for f in public["features"]}, values  # ... not public
        # The parent is merged from public units only: PLACE's 90 readings, not the lone 20.
        (parent,) = _cells(client, 9, values=values)["features"]
        assert parent["properties"]["n_readings"] == 90, values
        (parent_officer,) = _cells(client, 9, values=values, headers=officer)["features"]
        assert parent_officer["properties"]["n_readings"] == 110, values
    # Corrected and raw public parents differ only by the correction.
    raw_p = _cells(client, 9)["features"][0]["properties"]["mean"]
    cor_p = _cells(client, 9, values="corrected")["features"][0]["properties"]["mean"]
    assert raw_p != cor_p


def test_timeseries_corrected(client: httpx.Client) -> None:
    r = client.get(
        "/v1/timeseries",
        params={
            "metric": "pm25",
            "cell": format(PLACE_CELL, "x"),
            "from": "2026-11-21T00:00:00Z",
            "to": "2026-11-23T00:00:00Z",
            "values": "corrected",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["corrections"]["values"] == "corrected"
    assert len(body["corrections"]["versions"]) == 6  # 3 kits × 2 days
    points = [p for p in body["points"] if p["n_readings"]]
    assert len(points) == 24
    for p in points:
        hour = int(p["start"][11:13])
        day = int(p["start"][8:10]) - 21
        assert abs(p["mean"] - place_truth(day, hour)) < 0.3
    csv = client.get(
        "/v1/timeseries",
        params={
            "metric": "pm25",
            "cell": format(PLACE_CELL, "x"),
            **HOUR10,
            "values": "corrected",
            "format": "csv",
        },
    )
    assert csv.status_code == 200
    assert csv.headers["x-bikesense-values"] == "corrected"


def test_tiles_corrected(client: httpx.Client) -> None:
    import mercantile  # noqa: PLC0415

    t = mercantile.tile(PLACE[1], PLACE[0], 15)
    url = f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png"
    raw = client.get(url, params=HOUR10)
    corrected = client.get(url, params={**HOUR10, "values": "corrected"})
    assert raw.status_code == corrected.status_code == 200
    assert raw.headers["x-bikesense-values"] == "raw"
    assert corrected.headers["x-bikesense-values"] == "corrected"
    assert corrected.headers["x-bikesense-corrections"].startswith("3;")
    assert "x-bikesense-corrections" not in raw.headers
    assert corrected.headers["etag"] != raw.headers["etag"]
    assert corrected.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = client.get(
        url,
        params={**HOUR10, "values": "corrected"},
        headers={"If-None-Match": corrected.headers["etag"]},
    )
    assert again.status_code == 304


@pytest.mark.parametrize("metric", ["noise", "temperature", "humidity"])
def test_corrected_values_of_an_uncalibrated_metric_are_a_bad_parameter(
    client: httpx.Client, metric: str
) -> None:
    r = client.get(
        "/v1/cells", params={"metric": metric, "bbox": BBOX, **HOUR10, "values": "corrected"}
    )
    assert r.status_code == 422
    assert "values" in r.text
    assert "no corrected values" in r.text
    bad = client.get("/v1/cells", params={"metric": "pm25", "bbox": BBOX, "values": "fixed"})
    assert bad.status_code == 422


def test_meta_names_the_corrected_metrics(client: httpx.Client) -> None:
    assert client.get("/v1/meta").json()["corrected_metrics"] == ["pm25"]
