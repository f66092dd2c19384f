"""GET /v1/timeseries: one cell, a point or a bbox; JSON and CSV; finer buckets for officers;
every bucket of the range, an empty one where there is no data."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from api.roles import Role
from tests.api.api_factories import BUSY, NOW, QUIET, day_range, h3_hex


def _iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _series(client: httpx.Client, key: str | None = None, **params: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return client.get(
        "/v1/timeseries", params={"metric": "pm25", **day_range(), **params}, headers=headers
    )


def _with_data(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if p["n_readings"] > 0]


def _hours_of_the_day() -> list[str]:
    return [f"2026-11-21T{h:02d}:00:00Z" for h in range(24)]


def test_hourly_series_of_a_cell(client: httpx.Client) -> None:
    response = _series(client, cell=h3_hex(BUSY, 10))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cell"] == h3_hex(BUSY, 10)
    assert body["resolution"] == 10
    assert body["bucket_s"] == 3600
    assert [p["start"] for p in body["points"]] == _hours_of_the_day()
    (point,) = _with_data(body["points"])
    assert point["start"] == "2026-11-21T08:00:00Z"
    assert point["n_readings"] == 480
    assert point["rides"] == 4
    assert point["mean"] == pytest.approx(8.0, abs=0.1)
    assert 0 < point["ci95_low"] < point["mean"] < point["ci95_high"]
    assert point["interval_reason"] is None
    assert point["status"] == "ok"


def test_a_point_picks_its_cell(client: httpx.Client) -> None:
    body = _series(client, lat=BUSY[0], lon=BUSY[1], resolution=9).json()
    assert body["cell"] == h3_hex(BUSY, 9)
    assert _with_data(body["points"])[0]["rides"] == 4


def test_a_bbox_merges_its_public_cells(client: httpx.Client) -> None:
    body = _series(client, bbox="4.60,52.10,4.70,52.16", resolution=10).json()
    assert body["bbox"] == [4.6, 52.1, 4.7, 52.16]
    (point,) = _with_data(body["points"])
    assert point["n_readings"] == 480 + 9  # BUSY and SPARSE; QUIET (2 rides) is not public


def test_public_buckets_are_an_hour_or_more(client: httpx.Client, keys: dict[Role, str]) -> None:
    refused = _series(client, cell=h3_hex(BUSY, 10), bucket="15m")
    assert refused.status_code == 403
    assert refused.json()["detail"][0]["parameter"] == "bucket"
    fine = _series(client, keys[Role.OFFICER], cell=h3_hex(BUSY, 10), bucket="15m")
    assert fine.status_code == 200
    points = fine.json()["points"]
    assert len(points) == 24 * 4
    starts = [p["start"] for p in _with_data(points)]
    # Rides start at 08:05, 08:10, 08:15 and 08:20 and last two minutes each.
    assert starts == ["2026-11-21T08:00:00Z", "2026-11-21T08:15:00Z"]


def test_officers_see_cells_below_k(client: httpx.Client, keys: dict[Role, str]) -> None:
    # For the public the cell's hours are there, but empty: withheld looks like no data.
    public = _series(client, cell=h3_hex(QUIET, 10)).json()["points"]
    assert [p["start"] for p in public] == _hours_of_the_day()
    assert _with_data(public) == []
    body = _series(client, keys[Role.OFFICER], cell=h3_hex(QUIET, 10)).json()
    assert _with_data(body["points"])[0]["rides"] == 2


def test_an_hour_without_data_is_an_explicit_empty_bucket(client: httpx.Client) -> None:
    points = {p["start"]: p for p in _series(client, cell=h3_hex(BUSY, 10)).json()["points"]}
    assert points["2026-11-21T08:00:00Z"]["n_readings"] == 480
    empty = points["2026-11-21T09:00:00Z"]
    assert empty == {
        "start": "2026-11-21T09:00:00Z",
        "n_readings": 0,
        "rides": 0,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "p50": None,
        "p95": None,
        "p50_error_bound": None,
        "p95_error_bound": None,
        "laeq_db": None,
        "ci95_low": None,
        "ci95_high": None,
        "interval_reason": None,
        "status": "insufficient",
    }


def test_csv_has_a_line_per_bucket_with_empty_values_where_there_is_no_data(
    client: httpx.Client,
) -> None:
    response = _series(client, cell=h3_hex(BUSY, 10), format="csv", metric="noise")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert [r[0] for r in rows[1:]] == [h.replace("Z", "+00:00") for h in _hours_of_the_day()]
    line = dict(zip(rows[0], rows[1 + 9], strict=True))  # 09:00, after the rides
    assert line.pop("n_readings") == "0"
    assert line.pop("rides") == "0"
    assert line.pop("status") == "insufficient"
    assert set(line.values()) == {"", "2026-11-21T09:00:00+00:00"}


def test_csv_has_a_header_with_units(client: httpx.Client) -> None:
    response = _series(client, cell=h3_hex(BUSY, 10), format="csv", metric="noise")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:4] == ["start", "n_readings", "rides", "mean [dB(A)]"]
    assert "laeq_db [dB(A)]" in rows[0]
    assert len(rows) == 1 + 24
    row = rows[1 + 8]  # 08:00, the rides' hour
    assert float(row[rows[0].index("laeq_db [dB(A)]")]) == pytest.approx(77.0, abs=0.05)
    # The interval is LAeq's (docs/statistics.md), and a row without one would say why.
    low = float(row[rows[0].index("ci95_low [dB(A)]")])
    high = float(row[rows[0].index("ci95_high [dB(A)]")])
    assert low < 77.0 < high
    assert row[rows[0].index("interval_reason")] == ""


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({}, 422, "cell"),
        ({"cell": "zz"}, 422, "cell"),
        ({"cell": "8a19694a9d47ff0"}, 422, "cell"),
        ({"cell": h3_hex(BUSY, 12)}, 422, "resolution"),
        ({"cell": h3_hex(BUSY, 10), "bbox": "4,52,5,53"}, 422, "bbox"),
        ({"lat": 52.1}, 422, "lon"),
        ({"lat": 95, "lon": 4}, 422, "lat"),
        ({"bbox": "4,52,5,53", "bucket": "2h"}, 422, "bucket"),
        ({"bbox": "4,52,5,53", "format": "xml"}, 422, "format"),
        # No `to`: the range ends at the API's now (NOW, conftest.py) and may span 400 days.
        ({"cell": h3_hex(BUSY, 10), "from": _iso(NOW - timedelta(days=399))}, 200, None),
        ({"cell": h3_hex(BUSY, 10), "from": _iso(NOW - timedelta(days=401))}, 422, "from"),
    ],
)
def test_bad_parameters(
    client: httpx.Client, params: dict[str, object], status: int, parameter: str | None
) -> None:
    response = client.get("/v1/timeseries", params={"metric": "pm25", **params})
    assert response.status_code == status, response.text
    if parameter:
        assert response.json()["detail"][0]["parameter"] == parameter
