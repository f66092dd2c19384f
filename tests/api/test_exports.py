"""GET /v1/exports/readings: raw readings for researchers (pseudonymous) and admins."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from urllib.parse import urlencode

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.database import session_conninfo
from api.keys import create_key
from api.render.columns import ADMIN_COLUMNS, RESEARCHER_COLUMNS
from api.roles import Role
from bikesense.settings import load_settings
from storage.correction_sql import CORRECTED_METRICS
from storage.export_columns import corrected_column, on_map_column, version_column
from storage.pseudonyms import pseudonym, ride_pseudonym
from stream.core.partials import Metric
from stream.core.policy import DEFAULT_POLICY
from stream.core.qa import QaFlag, flag_names
from tests.api.api_factories import BUSY, T0_MS, day_range, ride, write
from tests.api.api_server import wait_for
from tests.api.conftest import PSEUDONYM_KEY
from tests.api.export_files import (
    read_csv_export,
    read_geojson_export,
    read_parquet_export,
)

ALL_ROWS = 4 * 120 + 2 * 120 + 3 * 3
KEY = PSEUDONYM_KEY
#: The scenario rides on 21 November 2026, 09:00-09:30 in Amsterdam.
DAY = date(2026, 11, 21)

#: With no correction stored, every corrected value and version is absent.
UNCORRECTED = {name for m in CORRECTED_METRICS for name in (corrected_column(m), version_column(m))}


def _export(client: httpx.Client, key: str | None, **params: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return client.get("/v1/exports/readings", params={**day_range(), **params}, headers=headers)


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    """The rows of a CSV export, checked whole (tests/api/export_files.py)."""
    assert response.status_code == 200, response.text
    return read_csv_export(response.content).rows


def test_the_public_and_officers_may_not_export(
    client: httpx.Client, keys: dict[Role, str]
) -> None:
    public = _export(client, None)
    assert public.status_code == 401
    assert public.json()["detail"][0]["parameter"] == "X-API-Key"
    officer = _export(client, keys[Role.OFFICER])
    assert officer.status_code == 403


def test_a_bad_key_is_refused(client: httpx.Client) -> None:
    response = _export(client, "bsk_000000000000_" + "A" * 43)
    assert response.status_code == 401
    bearer = client.get("/v1/exports/readings", headers={"Authorization": "Bearer not-a-key"})
    assert bearer.status_code == 401
    assert bearer.json()["detail"][0]["parameter"] == "Authorization"


def test_researchers_get_daily_pseudonyms_and_no_ids(
    client: httpx.Client, keys: dict[Role, str]
) -> None:
    response = _export(client, keys[Role.RESEARCHER], format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = _rows(response)
    assert len(rows) == ALL_ROWS
    assert list(rows[0]) == [c.name for c in RESEARCHER_COLUMNS]
    assert not {"kit_id", "boot_id", "seq", "idx", "ride_id", "received_at"} & set(rows[0])
    assert {r["kit_pseudonym"] for r in rows} == {pseudonym(k, DAY, KEY) for k in range(1, 10)}
    rides = {(k, 100 * (1 + (k > 4) + (k > 6)) + k) for k in range(1, 10)}  # scenario's ids
    assert {(r["kit_pseudonym"], r["ride_pseudonym"]) for r in rows} == {
        (pseudonym(k, DAY, KEY), ride_pseudonym(ride, DAY, KEY)) for k, ride in rides
    }
    first = rows[0]
    assert first["ts"] == "2026-11-21 08:05:00+00"
    assert first["qa_flags"] == "0"
    assert len(first["cell"]) == 15
    # In time order, and within a second by pseudonym, never by the kit's real number.
    keys_in_order = [(r["ts"], r["kit_pseudonym"], r["ride_pseudonym"]) for r in rows]
    assert keys_in_order == sorted(keys_in_order)


def test_admins_get_the_readings_as_stored(client: httpx.Client, keys: dict[Role, str]) -> None:
    rows = _rows(_export(client, keys[Role.ADMIN], format="csv"))
    assert len(rows) == ALL_ROWS
    assert list(rows[0]) == [c.name for c in ADMIN_COLUMNS]
    assert {r["kit_id"] for r in rows} == {str(k) for k in range(1, 10)}
    assert {r["boot_id"] for r in rows} == {"1", "2", "3"}
    assert rows[0]["ts"] == "2026-11-21 08:05:00+00"
    order = [
        (r["ts"], int(r["kit_id"]), int(r["boot_id"]), int(r["seq"]), int(r["idx"])) for r in rows
    ]
    assert order == sorted(order)


def test_bearer_keys_work_too(client: httpx.Client, keys: dict[Role, str]) -> None:
    response = client.get(
        "/v1/exports/readings",
        params=day_range(),
        headers={"Authorization": f"Bearer {keys[Role.ADMIN]}"},
    )
    assert response.status_code == 200


def test_filters_by_metric_kit_and_bbox(client: httpx.Client, keys: dict[Role, str]) -> None:
    admin = keys[Role.ADMIN]
    only_noise = _rows(_export(client, admin, metrics="noise", kit="1,2"))
    assert len(only_noise) == 240
    assert {r["kit_id"] for r in only_noise} == {"1", "2"}
    assert "pm25_ugm3" not in only_noise[0]
    assert "noise_lamax_db" in only_noise[0]
    researcher = keys[Role.RESEARCHER]
    boxed = _rows(_export(client, researcher, bbox="4.63,52.11,4.64,52.125"))  # SPARSE only
    assert len(boxed) == 9
    empty = _export(
        client, researcher, **{"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T01:00:00Z"}
    )
    nothing = read_csv_export(empty.content)
    assert (nothing.header, nothing.rows) == ([c.name for c in RESEARCHER_COLUMNS], [])


def test_researchers_filter_kits_by_pseudonym(client: httpx.Client, keys: dict[Role, str]) -> None:
    researcher = keys[Role.RESEARCHER]
    names = f"{pseudonym(1, DAY, KEY)},{pseudonym(2, DAY, KEY)}"
    rows = _rows(_export(client, researcher, kit_pseudonym=names, metrics="noise"))
    assert len(rows) == 240
    assert {r["kit_pseudonym"] for r in rows} == set(names.split(","))
    # The day before's name of kit 1 names nothing on this day.
    yesterday = pseudonym(1, date(2026, 11, 20), KEY)
    assert _rows(_export(client, researcher, kit_pseudonym=yesterday)) == []
    # Asking by real kit id and reading back the pseudonym would undo it.
    by_id = _export(client, researcher, kit="1")
    assert by_id.status_code == 403
    assert by_id.json()["detail"][0]["parameter"] == "kit"
    by_name = _export(client, keys[Role.ADMIN], kit_pseudonym=yesterday)
    assert by_name.status_code == 422
    assert by_name.json()["detail"][0]["parameter"] == "kit_pseudonym"


def test_parquet_carries_units_and_provenance(client: httpx.Client, keys: dict[Role, str]) -> None:
    response = _export(client, keys[Role.RESEARCHER], format="parquet", metrics="pm25")
    assert response.status_code == 200
    table = read_parquet_export(response.content)
    assert table.num_rows == ALL_ROWS
    assert table.column_names == [
        c.name for c in RESEARCHER_COLUMNS if c.metric in (None, Metric.PM25)
    ]
    assert table.schema.field("pm25_ugm3").metadata == {b"unit": "µg/m³".encode()}
    provenance = json.loads(table.schema.metadata[b"bikesense"])
    assert provenance["metrics"] == "pm25"
    assert provenance["identities"] == "daily pseudonyms, local days of Europe/Amsterdam"
    assert str(table.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert str(table.schema.field("kit_pseudonym").type) == "string"
    assert table.column("satellites").to_pylist()[0] == 9
    assert set(table.column("kit_pseudonym").to_pylist()) == {
        pseudonym(k, DAY, KEY) for k in range(1, 10)
    }
    admin_export = _export(client, keys[Role.ADMIN], format="parquet", kit="7")
    admin = read_parquet_export(admin_export.content)
    assert admin.column_names == [c.name for c in ADMIN_COLUMNS]
    assert set(admin.column("kit_id").to_pylist()) == {7}
    assert (
        admin.column("cell").to_pylist()[0]
        == _rows(_export(client, keys[Role.ADMIN], kit="7"))[0]["cell"]
    )


def test_geojson_is_a_feature_collection(client: httpx.Client, keys: dict[Role, str]) -> None:
    response = _export(
        client, keys[Role.RESEARCHER], format="geojson", kit_pseudonym=pseudonym(7, DAY, KEY)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    body = read_geojson_export(response.content)
    assert body["type"] == "FeatureCollection"
    assert len(body["features"]) == 3
    feature = body["features"][0]
    assert feature["geometry"]["type"] == "Point"
    lon, lat = feature["geometry"]["coordinates"]
    assert lon == pytest.approx(4.636, abs=1e-3)
    assert lat == pytest.approx(52.119, abs=1e-3)
    assert feature["properties"]["kit_pseudonym"] == pseudonym(7, DAY, KEY)
    assert [c["name"] for c in body["bikesense"]["columns"]] == list(feature["properties"])
    admin_export = _export(client, keys[Role.ADMIN], format="geojson", kit="7")
    admin = read_geojson_export(admin_export.content)
    assert [f["properties"]["kit_id"] for f in admin["features"]] == [7, 7, 7]


def test_many_slices_on_two_connections_give_the_same_export(
    make_client: Callable[..., httpx.Client],
    own_keys: dict[Role, str],
) -> None:
    # 100 rows a slice: the 729 readings come in eight slices, two at a time.
    sliced = make_client(export_batch_rows=100)
    whole = make_client()
    for role in (Role.RESEARCHER, Role.ADMIN):
        for fmt in ("csv", "geojson"):
            a = _export(sliced, own_keys[role], format=fmt)
            b = _export(whole, own_keys[role], format=fmt)
            assert a.status_code == b.status_code == 200
            if fmt == "geojson":
                assert json.loads(a.content)["features"] == json.loads(b.content)["features"]
            else:
                assert a.content == b.content
        tables = [
            read_parquet_export(_export(c, own_keys[role], format="parquet").content)
            for c in (sliced, whole)
        ]
        assert tables[0].num_rows == ALL_ROWS
        assert tables[0].equals(tables[1])


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"format": "xlsx"}, "format"),
        ({"kit": "seven"}, "kit"),
        ({"kit": "99999999999"}, "kit"),
        ({"metrics": "co2"}, "metrics"),
        ({"bbox": "0,0,0,0"}, "bbox"),
    ],
)
def test_bad_export_parameters(
    client: httpx.Client, keys: dict[Role, str], params: dict[str, object], parameter: str
) -> None:
    response = _export(client, keys[Role.ADMIN], **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["parameter"] == parameter


@pytest.mark.parametrize("name", ["KIT-ONE", "abc", "abcdefghijk1"])
def test_bad_pseudonyms_are_refused(client: httpx.Client, keys: dict[Role, str], name: str) -> None:
    response = _export(client, keys[Role.RESEARCHER], kit_pseudonym=name)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["parameter"] == "kit_pseudonym"


def test_a_missing_key_is_a_clear_503(
    make_client: Callable[..., httpx.Client], keys: dict[Role, str], shared_url: str
) -> None:
    client = make_client(url=shared_url, pseudonym_key="not base64!")
    response = _export(client, keys[Role.RESEARCHER])
    assert response.status_code == 503
    assert "pseudonym key" in response.json()["detail"][0]["message"]


def test_absent_values_are_empty_or_null_in_every_format(
    make_client: Callable[..., httpx.Client],
    migrated_database_url: str,
) -> None:
    rows = ride(kit_id=4, ride_id=404, start=BUSY, n=2, t0_ms=T0_MS)
    rows["lat_deg"][1] = rows["lon_deg"][1] = np.nan  # no fix: no position, no cell
    rows["gnss_fix"][1], rows["cell"][1], rows["satellites"][1] = 0, 0, -1
    rows["no2_ugm3"][1] = rows["hdop"][1] = np.nan
    write(migrated_database_url, [rows])
    client = make_client(migrated_database_url)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        key = create_key(conn, Role.RESEARCHER, label="test").token
    rows = _rows(_export(client, key))
    assert len(rows) == 2
    # A clean reading's flag names are empty too, and a value absent is never on the map;
    # no correction is stored, so no value is corrected.
    assert {k for k, v in rows[1].items() if v == ""} == {
        "lat_deg",
        "lon_deg",
        "hdop",
        "satellites",
        "no2_ugm3",
        "qa_flag_names",
        "cell",
        *UNCORRECTED,
    }
    features = read_geojson_export(_export(client, key, format="geojson").content)["features"]
    assert features[0]["geometry"]["type"] == "Point"
    assert features[1]["geometry"] is None
    assert {k for k, v in features[1]["properties"].items() if v is None} == {
        "lat_deg",
        "lon_deg",
        "hdop",
        "satellites",
        "no2_ugm3",
        "cell",
        *UNCORRECTED,
    }
    table = read_parquet_export(_export(client, key, format="parquet").content)
    assert {name for name in table.column_names if table.column(name)[1].as_py() is None} == {
        "lat_deg",
        "lon_deg",
        "hdop",
        "satellites",
        "no2_ugm3",
        "cell",
        *UNCORRECTED,
    }
    assert table.column("no2_ugm3")[0].as_py() == pytest.approx(20.0)
    # A reading with no cell counts for no metric on the map; the other for every one.
    on_map = [on_map_column(m) for m in Metric]
    assert [[r[c] for c in on_map] for r in rows] == [["TRUE"] * 7, ["FALSE"] * 7]
    assert [[f["properties"][c] for c in on_map] for f in features] == [[True] * 7, [False] * 7]
    assert [table.column(c).to_pylist() for c in on_map] == [[True, False]] * 7


def test_a_client_gone_mid_export_cancels_nothing_and_returns_every_connection(
    make_client: Callable[..., httpx.Client],
    own_keys: dict[Role, str],
    seeded_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Clients stop reading exports halfway. The server stops the export there, without
    # cancelling a running query (psycopg, cancelled again while cancelling one, closes
    # the connection with a warning) and gives the connections back to the pool idle.
    long_ride = ride(
        kit_id=1, ride_id=2000, start=BUSY, n=40_000, boot_id=9, seed=9, t0_ms=T0_MS + 3 * 3_600_000
    )
    write(seeded_url, [long_ride])
    client = make_client(export_batch_rows=500)  # 80 slices and more, two at a time
    caplog.set_level(logging.WARNING)
    for role in (Role.RESEARCHER, Role.ADMIN):
        for fmt in ("csv", "parquet", "geojson"):
            with client.stream(
                "GET",
                "/v1/exports/readings",
                params={**day_range(), "format": fmt},
                headers={"X-API-Key": own_keys[role]},
            ) as response:
                assert response.status_code == 200
                next(response.iter_bytes())  # the first part; then the client goes away

    def settled() -> bool:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            states = conn.execute(
                "SELECT state FROM pg_stat_activity"
                " WHERE application_name = 'bikesense-api'"
                " AND datname = current_database()"
            ).fetchall()
        return bool(states) and all(state == "idle" for (state,) in states)

    wait_for(settled, timeout_s=20, what="the export's connections back in the pool, idle")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    whole = _export(client, own_keys[Role.ADMIN], format="csv")
    assert len(_rows(whole)) == ALL_ROWS + len(long_ride)


def _terminate_api_backends(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'bikesense-api' AND datname = current_database()"
            ).fetchall()
        )


def test_an_export_cut_short_by_the_database_fails_visibly(
    make_client: Callable[..., httpx.Client],
    own_keys: dict[Role, str],
    seeded_url: str,
) -> None:
    # The backends serving an export die mid-stream: the client must see a failed transfer
    # (the chunked body ends without its last chunk), never a body that looks complete.
    long_ride = ride(
        kit_id=1, ride_id=2000, start=BUSY, n=60_000, boot_id=9, seed=9, t0_ms=T0_MS - 7 * 3_600_000
    )  # 01:00 to 17:40, within the day
    write(seeded_url, [long_ride])
    client = make_client(export_batch_rows=500)
    for fmt in ("csv", "geojson", "parquet"):
        received = bytearray()
        with (  # noqa: PT012
            pytest.raises(httpx.TransportError),
            client.stream(
                "GET",
                "/v1/exports/readings",
                params={**day_range(), "format": fmt},
                headers={"X-API-Key": own_keys[Role.ADMIN]},
            ) as response,
        ):
            assert response.status_code == 200
            chunks = response.iter_raw()
            # Text formats: rows have gone out, whole lines of them (Parquet holds its rows
            # until a row group is full, past this export's size).
            while len(received) < (1 if fmt == "parquet" else 100_000):
                received += next(chunks)
            assert _terminate_api_backends(seeded_url) > 0, fmt
            for chunk in chunks:
                received += chunk
        # And what a client saved anyway does not say that it is whole.
        if fmt == "csv":
            assert received.count(b"\n") > 300  # the head and hundreds of rows
        assert b"# complete:" not in received
        assert b"bikesense_complete" not in received
        _assert_not_whole(fmt, bytes(received))
    # The pool recovers: the next export is whole.
    assert len(_rows(_export(client, own_keys[Role.ADMIN]))) == ALL_ROWS + len(long_ride)


def _assert_not_whole(fmt: str, data: bytes) -> None:
    """``data``, the start of an export, lacks the statement a whole one ends with and
    does not load as one."""
    if fmt == "csv":
        with pytest.raises(AssertionError, match="no completion line"):
            read_csv_export(data)
    elif fmt == "geojson":
        with pytest.raises(json.JSONDecodeError):
            json.loads(data)
    else:
        with pytest.raises(pa.ArrowInvalid):
            pq.read_metadata(io.BytesIO(data))


def test_an_export_cut_anywhere_is_not_whole(client: httpx.Client, keys: dict[Role, str]) -> None:
    # A copy stopped halfway: every prefix of a real export, cut on a line boundary (whole
    # CSV rows, which a CSV reader alone would take for a file) or within a line.
    for fmt in ("csv", "geojson", "parquet"):
        data = _export(client, keys[Role.RESEARCHER], format=fmt).content
        assert len(data) > 10_000
        breaks = [i + 1 for i in range(len(data)) if data[i] == 0x0A][:-1]
        for cut in {*breaks[:: max(1, len(breaks) // 40)], *range(0, len(data) - 1, 997)}:
            _assert_not_whole(fmt, data[:cut])


def _api_sessions(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            state
            for (state,) in conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'bikesense-api'"
                " AND datname = current_database()"
            ).fetchall()
        ]


@contextmanager
def _stalled_export(client: httpx.Client, key: str) -> Iterator[socket.socket]:
    """A CSV export whose client reads the head and then nothing. Its receive buffer is
    small (set before connecting, which also stops the kernel from growing it), so the
    server has to wait for it long before the export is done."""
    query = urlencode({**day_range(), "format": "csv"})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect((client.base_url.host, client.base_url.port))
    with sock:
        sock.sendall(
            f"GET /v1/exports/readings?{query} HTTP/1.1\r\nHost: test\r\n"
            f"X-API-Key: {key}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        yield sock


def _rest(sock: socket.socket) -> bytes:
    """What the server still sends, until it closes the connection."""
    sock.settimeout(30)
    received = bytearray()
    while data := sock.recv(1 << 20):
        received += data
    return bytes(received)


@pytest.mark.parametrize(
    "limit",
    [
        {"send_timeout_s": 1.0},  # the export gives up on its client
        {"send_timeout_s": 3600.0, "idle_in_transaction_timeout_s": 1.0},  # PostgreSQL does
    ],
)
def test_a_client_that_stops_reading_does_not_hold_a_connection_in_a_transaction(
    make_client: Callable[..., httpx.Client],
    own_keys: dict[Role, str],
    seeded_url: str,
    limit: dict[str, float],
) -> None:
    write(
        seeded_url,
        [
            ride(
                kit_id=1,
                ride_id=2000,
                start=BUSY,
                n=60_000,
                boot_id=9,
                seed=9,
                t0_ms=T0_MS - 7 * 3_600_000,
            )
        ],
    )
    client = make_client(export_batch_rows=500, **limit)
    with _stalled_export(client, own_keys[Role.ADMIN]) as sock:
        wait_for(
            lambda: "idle in transaction" in _api_sessions(seeded_url),
            timeout_s=10,
            what="the stalled export's transaction",
        )
        # Until the client reads again, the export cannot end by itself: only a limit
        # ends its transaction (or PostgreSQL its sessions).
        wait_for(
            lambda: all(state == "idle" for state in _api_sessions(seeded_url)),
            timeout_s=15,
            what="the stalled export's transaction to end",
        )
        # And the client learns that its export is not whole: no terminating chunk.
        assert not _rest(sock).endswith(b"\r\n0\r\n\r\n")


def test_the_api_sessions_carry_their_timeouts(seeded_url: str) -> None:
    api = load_settings(statement_timeout_s=2.5, idle_in_transaction_timeout_s=90).api
    with psycopg.connect(
        session_conninfo(seeded_url + "?options=-c%20work_mem%3D8MB", api), autocommit=True
    ) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2500ms",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("90s",)
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)  # the operator's, kept
        assert conn.execute("SHOW jit").fetchone() == ("off",)  # api/database.py says why
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")


def test_a_reading_with_several_flags_is_decoded_alike_in_every_format(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str], seeded_url: str
) -> None:
    rows = ride(kit_id=4, ride_id=404, start=BUSY, n=4, t0_ms=T0_MS + 3_600_000)
    several = QaFlag.WARMING_UP | QaFlag.NO2_WARMING_UP | QaFlag.HUMID_PM | QaFlag.NOISE_STUCK
    rows["qa_flags"] = [0, several, QaFlag.LOW_BATTERY, QaFlag.POSITION_JUMP]
    write(seeded_url, [rows])
    client = make_client()
    params = {"kit": "4", "from": "2026-11-21T09:00:00Z", "to": "2026-11-21T10:00:00Z"}
    names = ["", "WARMING_UP|NO2_WARMING_UP|HUMID_PM|NOISE_STUCK", "LOW_BATTERY", "POSITION_JUMP"]
    assert names == ["|".join(flag_names(int(f))) for f in rows["qa_flags"].tolist()]
    # WARMING_UP keeps PM and NO2 off the map, NOISE_STUCK noise; the rest counts.
    on_map = {on_map_column(m): DEFAULT_POLICY.publishable(rows, m).tolist() for m in Metric}
    assert on_map["pm25_on_map"] == [True, False, True, False]
    assert on_map["noise_on_map"] == [True, False, True, False]
    assert on_map["temperature_on_map"] == [True, True, True, False]
    csv_rows = _rows(_export(client, own_keys[Role.ADMIN], format="csv", **params))
    assert [r["qa_flag_names"] for r in csv_rows] == names
    features = read_geojson_export(
        _export(client, own_keys[Role.ADMIN], format="geojson", **params).content
    )["features"]
    table = read_parquet_export(
        _export(client, own_keys[Role.ADMIN], format="parquet", **params).content
    )
    assert [f["properties"]["qa_flag_names"] for f in features] == names
    assert table.column("qa_flag_names").to_pylist() == names
    for column, expected in on_map.items():
        assert [r[column] for r in csv_rows] == ["TRUE" if e else "FALSE" for e in expected]
        assert [f["properties"][column] for f in features] == expected, column
        assert table.column(column).to_pylist() == expected, column
