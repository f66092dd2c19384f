"""GET /v1/exports/readings: raw readings for researchers, streamed in three formats."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pyarrow.parquet as pq
import pytest

from api.export import EXPORT_COLUMNS
from api.roles import Role
from tests.api.api_factories import day_range

ALL_ROWS = 4 * 120 + 2 * 120 + 3 * 3


def _export(client: httpx.Client, key: str | None, **params: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return client.get("/v1/exports/readings", params={**day_range(), **params}, headers=headers)


def test_the_public_and_officers_may_not_export(client: httpx.Client,
                                                keys: dict[Role, str]) -> None:
    public = _export(client, None)
    assert public.status_code == 401
    assert public.json()["detail"][0]["parameter"] == "X-API-Key"
    officer = _export(client, keys[Role.OFFICER])
    assert officer.status_code == 403


def test_a_bad_key_is_refused(client: httpx.Client) -> None:
    response = _export(client, "bsk_000000000000_" + "A" * 43)
    assert response.status_code == 401
    bearer = client.get("/v1/exports/readings",
                        headers={"Authorization": "Bearer not-a-key"})
    assert bearer.status_code == 401
    assert bearer.json()["detail"][0]["parameter"] == "Authorization"


def test_csv_has_stable_columns_with_units_and_every_row(client: httpx.Client,
                                                         keys: dict[Role, str]) -> None:
    response = _export(client, keys[Role.RESEARCHER], format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == ALL_ROWS
    assert list(rows[0]) == [c.name for c in EXPORT_COLUMNS]
    assert "pm25_ugm3" in rows[0]
    assert "noise_laeq_db" in rows[0]
    first = rows[0]
    assert first["ts"] == "2026-11-21 08:05:00+00"
    assert first["qa_flags"] == "0"
    assert len(first["cell"]) == 15
    times = [r["ts"] for r in rows]
    assert times == sorted(times)


def test_bearer_keys_work_too(client: httpx.Client, keys: dict[Role, str]) -> None:
    response = client.get("/v1/exports/readings", params=day_range(),
                          headers={"Authorization": f"Bearer {keys[Role.ADMIN]}"})
    assert response.status_code == 200


def test_filters_by_metric_kit_and_bbox(client: httpx.Client, keys: dict[Role, str]) -> None:
    key = keys[Role.RESEARCHER]
    only_noise = _export(client, key, metrics="noise", kit="1,2")
    rows = list(csv.DictReader(io.StringIO(only_noise.text)))
    assert len(rows) == 240
    assert {r["kit_id"] for r in rows} == {"1", "2"}
    assert "pm25_ugm3" not in rows[0]
    assert "noise_lamax_db" in rows[0]
    boxed = _export(client, key, bbox="4.63,52.11,4.64,52.125")  # SPARSE only
    assert len(list(csv.DictReader(io.StringIO(boxed.text)))) == 9
    empty = _export(client, key, **{"from": "2026-11-20T00:00:00Z",
                                     "to": "2026-11-20T01:00:00Z"})
    assert empty.text.strip() == ",".join(c.name for c in EXPORT_COLUMNS)


def test_parquet_carries_units_and_provenance(client: httpx.Client,
                                              keys: dict[Role, str]) -> None:
    response = _export(client, keys[Role.RESEARCHER], format="parquet", metrics="pm25")
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == ALL_ROWS
    assert "noise_laeq_db" not in table.column_names
    assert table.schema.field("pm25_ugm3").metadata == {b"unit": "µg/m³".encode()}
    provenance = json.loads(table.schema.metadata[b"bikesense"])
    assert provenance["metrics"] == "pm25"
    assert str(table.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert table.column("satellites").to_pylist()[0] == 9


def test_geojson_is_a_feature_collection(client: httpx.Client, keys: dict[Role, str]) -> None:
    response = _export(client, keys[Role.RESEARCHER], format="geojson", kit="7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    body = json.loads(response.content)
    assert body["type"] == "FeatureCollection"
    assert len(body["features"]) == 3
    feature = body["features"][0]
    assert feature["geometry"]["type"] == "Point"
    lon, lat = feature["geometry"]["coordinates"]
    assert lon == pytest.approx(4.636, abs=1e-3)
    assert lat == pytest.approx(52.119, abs=1e-3)
    assert feature["properties"]["kit_id"] == 7
    assert {c["name"] for c in body["bikesense"]["columns"]} == set(feature["properties"])


@pytest.mark.parametrize(("params", "parameter"), [
    ({"format": "xlsx"}, "format"),
    ({"kit": "seven"}, "kit"),
    ({"kit": "99999999999"}, "kit"),
    ({"metrics": "co2"}, "metrics"),
    ({"bbox": "0,0,0,0"}, "bbox"),
])
def test_bad_export_parameters(client: httpx.Client, keys: dict[Role, str],
                               params: dict[str, object], parameter: str) -> None:
    response = _export(client, keys[Role.RESEARCHER], **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["parameter"] == parameter
