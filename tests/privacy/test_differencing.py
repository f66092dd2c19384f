"""The public view is closed under differencing, and k counts the rides of each metric.

Written as the attacker of issue 21 would try it: with public calls only, subtract one
figure from another (a parent cell minus its public children, a day minus its public
hours, one range minus another) and look at what is left. Every public figure must be
merged from public units only (docs/privacy.md, "Threat model"), so what is left is
always nothing, or figures the public sees anyway. Each test first checks, with an
officer's key, that the hidden thing is really there.

The data go through the stream core's aggregation and the batch writer into real
PostgreSQL; the API is a real server on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from h3.api import basic_int as h3int

from api.app import create_app
from api.deps import get_now
from api.keys import create_key
from api.roles import Role
from bikesense.settings import load_settings
from tests.api.api_factories import NOW, RESOLUTIONS, T0_MS, WINDOWS, ride, write
from tests.api.api_server import ServerThread

pytestmark = pytest.mark.postgres

HOUR_MS = 3_600_000
#: A res-9 cell and two of its res-10 children: PUBLIC_CHILD gets k = 3 rides in the
#: first hour, LONE_CHILD one ride in the same hour (and so does LONE_HOUR_CELL's
#: second hour, below).
PARENT = h3int.latlng_to_cell(52.1290, 4.6560, 9)
PUBLIC_CHILD, LONE_CHILD = sorted(h3int.cell_to_children(PARENT, 10))[:2]
#: A res-10 cell elsewhere: 3 rides in hour 0, 1 ride in hour 2, the same day.
LONE_HOUR_CELL = h3int.latlng_to_cell(52.1450, 4.6900, 10)
#: A res-10 cell where 3 rides pass in one hour but only one of them measures NO2.
NO2_CELL = h3int.latlng_to_cell(52.1150, 4.6300, 10)
DAY = {"from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
BBOX = "4.60,52.10,4.72,52.16"


def _at(cell: int) -> tuple[float, float]:
    lat, lon = h3int.cell_to_latlng(cell)
    return lat, lon


def _rides() -> list[np.ndarray]:
    out = []
    kit = iter(range(500, 600))

    def add(cell: int, hour: int, pm25: float, *, no2: bool = True) -> None:
        k = next(kit)
        r = ride(
            kit_id=k,
            ride_id=k,
            start=_at(cell),
            n=60,
            pm25=pm25,
            seed=k,
            boot_id=k,
            t0_ms=T0_MS + hour * HOUR_MS + (k % 10) * 60_000,
        )
        if not no2:
            r["no2_ugm3"] = np.nan
        out.append(r)

    for _ in range(3):
        add(PUBLIC_CHILD, 0, 8.0)
    add(LONE_CHILD, 0, 55.0)  # the secret: one ride, a high value
    for _ in range(3):
        add(LONE_HOUR_CELL, 0, 8.0)
    add(LONE_HOUR_CELL, 2, 77.0)  # the secret: one ride two hours later
    add(NO2_CELL, 0, 8.0)
    add(NO2_CELL, 0, 8.0, no2=False)
    add(NO2_CELL, 0, 8.0, no2=False)
    return out


@pytest.fixture(scope="module")
def served(postgres_url: str, migrated_template: str) -> Iterator[tuple[str, str, str]]:
    """(server URL, officer key, database URL) of an API on a database holding
    :func:`_rides`."""
    import uuid  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    name = f"diff_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(migrated_template)
            )
        )
    url = f"{postgres_url.rpartition('/')[0]}/{name}"
    write(url, _rides())
    with psycopg.connect(url, autocommit=True) as conn:
        officer = create_key(conn, Role.OFFICER, label="officer").token
    app = create_app(
        load_settings(
            database_url=url,
            h3_resolutions=RESOLUTIONS,
            window_sizes_s=WINDOWS,
            public_rate_per_s=10_000.0,
            public_burst=10_000,
        )
    )
    app.dependency_overrides[get_now] = lambda: NOW
    with ServerThread(app) as server:
        yield server.url, officer, url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def api(served: tuple[str, str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], timeout=30) as client:
        yield client


def _cells(
    client: httpx.Client, res: int, key: str | None = None, metric: str = "pm25", **params: Any
) -> dict[int, dict[str, Any]]:
    response = client.get(
        "/v1/cells",
        params={"metric": metric, "bbox": BBOX, "resolution": res, **DAY, **params},
        headers={"X-API-Key": key} if key else {},
    )
    assert response.status_code == 200, response.text
    return {int(f["id"], 16): f["properties"] for f in response.json()["features"]}


def _series(
    client: httpx.Client, cell: int, bucket: str, key: str | None = None
) -> dict[str, dict[str, Any]]:
    response = client.get(
        "/v1/timeseries",
        params={"metric": "pm25", "cell": format(cell, "x"), "bucket": bucket, **DAY},
        headers={"X-API-Key": key} if key else {},
    )
    assert response.status_code == 200, response.text
    # Buckets with data only: a withheld hour is an empty bucket, as one without data.
    return {p["start"]: p for p in response.json()["points"] if p["n_readings"] > 0}


def _total(props: list[dict[str, Any]]) -> tuple[int, float]:
    """Readings and their sum over figures: what an attacker subtracts."""
    return (sum(p["n_readings"] for p in props), sum(p["n_readings"] * p["mean"] for p in props))


def test_a_parent_cell_minus_its_public_children_reveals_nothing(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    officer = _cells(api, 10, served[1])
    assert officer[LONE_CHILD]["rides"] == 1  # the secret exists, one ride
    public_children = _cells(api, 10)
    assert LONE_CHILD not in public_children
    parent = _cells(api, 9)[PARENT]
    children = [p for c, p in public_children.items() if h3int.cell_to_parent(c, 9) == PARENT]
    n_left, sum_left = np.subtract(
        (parent["n_readings"], parent["n_readings"] * parent["mean"]), _total(children)
    )
    assert n_left == 0
    assert sum_left == pytest.approx(0, abs=1e-6)
    assert parent["max"] < 55.0 - 5  # not even the secret's extreme
    # And at every coarser resolution, the same.
    for res in (7, 8):
        coarse = _cells(api, res)
        assert _total(list(coarse.values()))[0] == _total(list(public_children.values()))[0]


def test_a_day_minus_its_public_hours_reveals_nothing(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    officer = _series(api, LONE_HOUR_CELL, "1h", served[1])
    assert officer["2026-11-21T10:00:00Z"]["rides"] == 1  # the secret hour
    hours = _series(api, LONE_HOUR_CELL, "1h")
    assert "2026-11-21T10:00:00Z" not in hours
    (day,) = _series(api, LONE_HOUR_CELL, "1d").values()
    n_left, sum_left = np.subtract(
        (day["n_readings"], day["n_readings"] * day["mean"]), _total(list(hours.values()))
    )
    assert n_left == 0
    assert sum_left == pytest.approx(0, abs=1e-6)
    assert day["max"] < 77.0 - 5
    assert day["rides"] == 3


def test_long_ranges_merged_from_daily_windows_reveal_nothing(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    # 30 days: the API merges daily windows; the lone hour's day has 4 rides, but its
    # figure must still be the merge of the public hours.
    month = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    response = api.get(
        "/v1/cells", params={"metric": "pm25", "bbox": BBOX, "resolution": 10, **month}
    )
    assert response.json()["window_s"] == 86400
    cell = {int(f["id"], 16): f["properties"] for f in response.json()["features"]}
    hours = _series(api, LONE_HOUR_CELL, "1h")
    assert cell[LONE_HOUR_CELL]["n_readings"] == _total(list(hours.values()))[0]
    assert LONE_CHILD not in cell


def test_tiles_are_merged_from_public_units_only(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    # A coarse tile's cell means: the same figures as the cells, never a parent judged
    # on its own rides (storage.cell_means shares the units with storage.cell_stats).
    import asyncio  # noqa: PLC0415

    from storage.cell_means import cell_means  # noqa: PLC0415
    from storage.selection import BBox, Selection  # noqa: PLC0415
    from stream.core.partials import Metric  # noqa: PLC0415

    public = _cells(api, 9)[PARENT]

    async def read(dsn: str) -> np.ndarray:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with conn:
            sel = Selection(
                Metric.PM25,
                9,
                3600,
                datetime(2026, 11, 21, tzinfo=UTC),
                datetime(2026, 11, 22, tzinfo=UTC),
                min_rides=3,
                min_days=1,
                unit_resolution=10,
                unit_window_s=3600,
            )
            return await cell_means(conn, sel, BBox(4.60, 52.10, 4.72, 52.16))

    means = asyncio.run(read(served[2]))
    (row,) = means[means["cell"] == PARENT]
    assert int(row["n"]) == public["n_readings"]


def test_a_metric_is_public_only_with_k_rides_that_measured_it(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    assert _cells(api, 10, served[1], metric="no2")[NO2_CELL]["rides"] == 1
    assert _cells(api, 10, served[1], metric="pm25")[NO2_CELL]["rides"] == 3
    assert NO2_CELL in _cells(api, 10, metric="pm25")
    assert NO2_CELL not in _cells(api, 10, metric="no2")
    # Nor through its parents.
    for res in (7, 8, 9):
        parent = h3int.cell_to_parent(NO2_CELL, res)
        figure = _cells(api, res, metric="no2").get(parent)
        assert figure is None or figure["n_readings"] == 0


def test_the_withheld_flag_does_not_betray_a_lone_ride(
    api: httpx.Client, served: tuple[str, str, str]
) -> None:
    # The public is told when data was withheld (/v1/cells "withheld"), so an attacker
    # narrows the view to one street block and one hour to learn whether a ride passed.
    # The flag is judged per whole district (resolution 7) and UTC day and needs k rides
    # there: one ride, anywhere or at any hour, never sets it, so every narrowed view
    # reads as one without data.
    def withheld(cell: int, metric: str = "pm25", **params: Any) -> bool:
        lat, lon = _at(cell)
        d = 0.0005
        response = api.get(
            "/v1/cells",
            params={
                "metric": metric,
                "bbox": f"{lon - d},{lat - d},{lon + d},{lat + d}",
                "resolution": 10,
                **DAY,
                **params,
            },
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["withheld"])

    officer = _cells(api, 10, served[1])
    assert officer[LONE_CHILD]["rides"] == 1
    assert _cells(api, 10, served[1], metric="no2")[NO2_CELL]["rides"] == 1
    hours = [
        {"from": f"2026-11-21T{h:02d}:00:00Z", "to": f"2026-11-21T{h + 1:02d}:00:00Z"}
        for h in range(7, 12)
    ]
    for cell in (LONE_CHILD, LONE_HOUR_CELL, PUBLIC_CHILD):
        assert not withheld(cell)
        assert not any(withheld(cell, **hour) for hour in hours)
    assert not withheld(NO2_CELL, metric="no2")
    # The whole area and day too: no district-day holds k withheld rides.
    body = api.get("/v1/cells", params={"metric": "pm25", "bbox": BBOX, "resolution": 10, **DAY})
    assert body.json()["withheld"] is False
