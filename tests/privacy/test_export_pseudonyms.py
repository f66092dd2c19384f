"""Researcher exports name kits and rides only by daily pseudonyms (docs/design.md decision 4).

One kit with ids no other number in the data resembles rides on Monday, on
Tuesday, and from Tuesday 23:55 to Wednesday 00:05 local time; a second kit
rides beside it on Monday. The exports go through the real API and database.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import httpx
import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from api.app import create_app
from api.keys import create_key
from api.roles import Role
from bikesense.exceptions import ConfigurationError
from bikesense.settings import load_settings
from storage.exceptions import QueryError
from storage.exports import Encoding, ExportFilter, Pseudonyms, aiter_export_blocks
from storage.pseudonyms import (
    PseudonymKey,
    local_days,
    pseudonym,
    pseudonymise,
    ride_pseudonym,
)
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from stream.core.rides import ride_id_for
from stream.settings import core_config
from tests.api.api_factories import BUSY, RESOLUTIONS, WINDOWS, ride
from tests.api.api_server import ServerThread
from tests.api.export_files import read_csv_export

pytestmark = [pytest.mark.postgres]

KEY = PseudonymKey(b"privacy test pseudonym key 32 b!")
TZ = "Europe/Amsterdam"
KIT, BOOT, SEQ0 = 3_141_592, 2_718_281, 1_618_033
OTHER_KIT, OTHER_SEQ0 = 27_182_818, 5_550_000
MON, TUE, WED = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)
RANGE = {"from": "2026-11-23T00:00:00Z", "to": "2026-11-26T00:00:00Z"}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _ride(kit: int, start: str, n: int, seq0: int, seed: int) -> np.ndarray:
    t0 = _ms(start)
    # Readings (and so arrivals) 437 ms past the second: that phase must not show through.
    return ride(
        kit_id=kit,
        ride_id=ride_id_for(kit, BOOT, t0),
        start=BUSY,
        n=n,
        t0_ms=t0,
        boot_id=BOOT,
        seq0=seq0,
        seed=seed,
    )


def _readings() -> np.ndarray:
    return np.concatenate(
        [
            _ride(KIT, "2026-11-23T08:00:00.437+00:00", 60, SEQ0, 1),  # Monday 09:00 local
            _ride(OTHER_KIT, "2026-11-23T08:00:00.437+00:00", 60, OTHER_SEQ0, 2),  # beside it
            _ride(KIT, "2026-11-24T08:00:00.437+00:00", 60, SEQ0 + 100, 3),  # Tuesday
            # 22:55-23:05 UTC: 23:55 on Tuesday to 00:05 on Wednesday in Amsterdam.
            _ride(KIT, "2026-11-24T22:55:00.437+00:00", 600, SEQ0 + 200, 4),
        ]
    )


@pytest.fixture(scope="module")
def export_url(postgres_url: str, migrated_template: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(migrated_template)
            )
        )
    url = f"{postgres_url.rpartition('/')[0]}/{name}"
    agg = partial(aggregate, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
    with psycopg.connect(url, autocommit=True) as conn:
        write_batch(conn, _readings(), agg)
    yield url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def api(export_url: str) -> Iterator[tuple[httpx.Client, dict[Role, str]]]:
    # Slices of 100 rows: the midnight ride spans several, fetched two at a time.
    settings = load_settings(
        database_url=export_url,
        h3_resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        export_batch_rows=100,
        pseudonym_key=KEY.to_text(),
    )
    app = create_app(settings, listen=False)
    with psycopg.connect(export_url, autocommit=True) as conn:
        keys = {
            role: create_key(conn, role, label="privacy test").token
            for role in (Role.RESEARCHER, Role.ADMIN)
        }
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, keys


def _get(
    api: tuple[httpx.Client, dict[Role, str]], role: Role, fmt: str, **params: Any
) -> httpx.Response:
    client, keys = api
    response = client.get(
        "/v1/exports/readings",
        params={**RANGE, "format": fmt, **params},
        headers={"X-API-Key": keys[role]},
    )
    assert response.status_code == 200, response.text
    return response


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    return read_csv_export(response.content).rows


def _records(
    api: tuple[httpx.Client, dict[Role, str]], fmt: str, role: Role = Role.RESEARCHER, **params: Any
) -> list[dict[str, Any]]:
    """Every row of one export as a dict of Python values, in the export's order."""
    response = _get(api, role, fmt, **params)
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(response.content))
        return [{**r, "ts": r["ts"].strftime("%Y-%m-%d %H:%M:%S+00")} for r in table.to_pylist()]
    if fmt == "geojson":
        return [f["properties"] for f in json.loads(response.content)["features"]]
    return [
        {k: (float(v) if k.endswith("_deg") else v) for k, v in r.items()} for r in _csv(response)
    ]


def _local_day(ts_text: str) -> date:
    ms = int(datetime.fromisoformat(ts_text).timestamp() * 1000)
    return date.fromisoformat(str(local_days(np.array([ms]), TZ)[0]))


def test_kit_pseudonyms_change_every_local_day_and_hold_within_one(api: Any) -> None:
    rows = [r for r in _records(api, "csv") if r["kit_pseudonym"] != pseudonym(OTHER_KIT, MON, KEY)]
    assert len(rows) == 60 + 60 + 600
    by_day: dict[date, set[str]] = {}
    for r in rows:
        by_day.setdefault(_local_day(r["ts"]), set()).add(r["kit_pseudonym"])
    assert by_day == {day: {pseudonym(KIT, day, KEY)} for day in (MON, TUE, WED)}
    assert len({pseudonym(KIT, day, KEY) for day in (MON, TUE, WED)}) == 3


def test_every_format_names_a_reading_alike_and_as_storage_pseudonyms_does(api: Any) -> None:
    reference = pseudonymise(_readings(), KEY, TZ)
    expected = sorted(
        (
            datetime.fromtimestamp(int(ts) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S+00"),
            k.decode(),
            r.decode(),
            float(lat),
        )
        for ts, k, r, lat in zip(
            reference["ts_ms"],
            reference["kit_pseudonym"],
            reference["ride_pseudonym"],
            reference["lat_deg"],
            strict=True,
        )
    )
    exported = {}
    for fmt in ("csv", "geojson", "parquet"):
        records = _records(api, fmt)
        keys = [(r["ts"], r["kit_pseudonym"], r["ride_pseudonym"], r["lat_deg"]) for r in records]
        assert keys == sorted(keys), f"{fmt} is not in (time, kit, ride) order"
        exported[fmt] = keys
    assert exported["csv"] == exported["geojson"] == exported["parquet"] == expected


def _linkers(values: list[int]) -> re.Pattern[bytes]:
    """Any of ``values`` as a whole number, not as digits inside another number."""
    return re.compile(rb"(?<![\d.])(" + b"|".join(str(v).encode() for v in values) + rb")(?![\d])")


def test_no_real_id_counter_or_arrival_time_reaches_a_researcher(api: Any) -> None:
    stored = _readings()
    secrets = sorted({KIT, OTHER_KIT, BOOT, *stored["seq"].tolist(), *stored["ride_id"].tolist()})
    pattern = _linkers(secrets)
    for fmt in ("csv", "geojson", "parquet"):
        response = _get(api, Role.RESEARCHER, fmt)
        data = response.content
        meta = [str(response.headers).encode()]
        if fmt == "geojson":
            data = data.split(b"\n", 1)[1]  # past the header and its export time
        if fmt == "csv":  # the comment lines hold the export time too
            lines = data.splitlines(keepends=True)
            meta.append(b"".join(ln for ln in lines if ln.startswith(b"#")))
            data = b"".join(ln for ln in lines if not ln.startswith(b"#"))
        if fmt == "parquet":
            table = pq.read_table(io.BytesIO(response.content))
            assert not {"kit_id", "boot_id", "seq", "idx", "ride_id", "received_at"} & set(
                table.column_names
            )
            data = json.dumps(table.to_pylist(), default=str).encode()
            # The file's own bytes too: its footer holds the schema and provenance as text.
            meta += [
                response.content,
                str(table.schema).encode(),
                str(table.schema.metadata).encode(),
            ]
        for text in (data, *meta):
            assert not pattern.search(text), f"{fmt}: {pattern.search(text)}"
        # Neither the arrival time nor the sub-second phase of the kit's clock.
        assert not re.search(rb"\d\d:\d\d:\d\d\.\d", data)
        assert b"received" not in data


def test_admins_see_the_stored_ids(api: Any) -> None:
    rows = _records(api, "csv", Role.ADMIN)
    assert len(rows) == 780
    assert {int(r["kit_id"]) for r in rows} == {KIT, OTHER_KIT}
    assert {int(r["boot_id"]) for r in rows} == {BOOT}
    assert min(int(r["seq"]) for r in rows if int(r["kit_id"]) == KIT) == SEQ0
    assert rows[0]["ts"] == "2026-11-23 08:00:00.437+00"
    parquet = _records(api, "parquet", Role.ADMIN)
    assert {r["kit_id"] for r in parquet} == {KIT, OTHER_KIT}


def test_a_ride_across_local_midnight_is_two_unlinked_rides(api: Any) -> None:
    late = _ride(KIT, "2026-11-24T22:55:00.437+00:00", 600, SEQ0 + 200, 4)
    ride_id = int(late["ride_id"][0])
    for fmt in ("csv", "geojson", "parquet"):
        rows = [r for r in _records(api, fmt) if r["ts"] >= "2026-11-24 22:55"]
        assert len(rows) == 600
        before = [r for r in rows if r["ts"] < "2026-11-24 23:00"]  # local midnight
        after = [r for r in rows if r["ts"] >= "2026-11-24 23:00"]
        assert len(before) == len(after) == 300
        assert {(r["kit_pseudonym"], r["ride_pseudonym"]) for r in before} == {
            (pseudonym(KIT, TUE, KEY), ride_pseudonym(ride_id, TUE, KEY))
        }
        assert {(r["kit_pseudonym"], r["ride_pseudonym"]) for r in after} == {
            (pseudonym(KIT, WED, KEY), ride_pseudonym(ride_id, WED, KEY))
        }
        # No name or value of one side names the other.
        names_before = {r["kit_pseudonym"] for r in before} | {r["ride_pseudonym"] for r in before}
        names_after = {r["kit_pseudonym"] for r in after} | {r["ride_pseudonym"] for r in after}
        assert not names_before & names_after


def test_a_pseudonym_filter_matches_only_on_its_own_day(api: Any) -> None:
    monday = pseudonym(KIT, MON, KEY)
    rows = _records(api, "csv", kit_pseudonym=monday)
    assert len(rows) == 60
    assert {r["kit_pseudonym"] for r in rows} == {monday}
    assert {_local_day(r["ts"]) for r in rows} == {MON}


def test_within_a_second_rows_follow_the_pseudonyms_not_the_kit_numbers(api: Any) -> None:
    rows = _records(api, "csv", **{"from": "2026-11-23T08:00:00Z", "to": "2026-11-23T08:01:00Z"})
    assert len(rows) == 120
    names = sorted([pseudonym(KIT, MON, KEY), pseudonym(OTHER_KIT, MON, KEY)])
    assert [r["kit_pseudonym"] for r in rows[:2]] == names


def test_storage_refuses_what_would_link_days(export_url: str) -> None:
    flt = ExportFilter(
        start=datetime(2026, 11, 23, tzinfo=UTC), end=datetime(2026, 11, 26, tzinfo=UTC)
    )
    pseudonyms = Pseudonyms(KEY, TZ)

    async def first_block(names: list[str], flt: ExportFilter) -> None:
        async with await psycopg.AsyncConnection.connect(export_url, autocommit=True) as conn:
            async for _ in aiter_export_blocks(
                [conn], names, flt, Encoding.CSV, day_tz=TZ, pseudonyms=pseudonyms
            ):
                break

    for withheld in ("kit_id", "boot_id", "seq", "idx", "ride_id", "received_at"):
        with pytest.raises(QueryError, match=withheld):
            asyncio.run(first_block(["ts", withheld], flt))
    by_id = ExportFilter(start=flt.start, end=flt.end, kit_ids=(KIT,))
    with pytest.raises(QueryError, match="by pseudonym"):
        asyncio.run(first_block(["ts", "kit_pseudonym"], by_id))


def test_the_days_of_pseudonyms_are_the_configured_zone_s(export_url: str) -> None:
    # BIKESENSE_DAY_TZ=UTC: the ride of 22:55-23:05 UTC is all Tuesday, where in
    # Amsterdam (the default, the tests above) it crosses into Wednesday.
    settings = load_settings(
        database_url=export_url,
        h3_resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        day_tz="UTC",
        export_batch_rows=100,
        pseudonym_key=KEY.to_text(),
    )
    app = create_app(settings, listen=False)
    with psycopg.connect(export_url, autocommit=True) as conn:
        token = create_key(conn, Role.RESEARCHER, label="utc days").token
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.get(
            "/v1/exports/readings",
            params={**RANGE, "format": "csv", "from": "2026-11-24T22:00:00Z"},
            headers={"X-API-Key": token},
        )
    assert response.status_code == 200, response.text
    rows = _csv(response)
    assert len(rows) == 600
    assert {r["kit_pseudonym"] for r in rows} == {pseudonym(KIT, TUE, KEY)}
    assert (
        "identities=daily pseudonyms, local days of UTC"
        in response.headers["X-Bikesense-Provenance"]
    )


def test_an_unknown_day_zone_is_a_clear_configuration_error() -> None:
    with pytest.raises(
        ConfigurationError, match=r"BIKESENSE_DAY_TZ: .*unknown time zone 'Mars/Olympus'"
    ):
        load_settings(day_tz="Mars/Olympus")
    assert core_config(load_settings(day_tz="America/New_York")).day_tz == "America/New_York"
