"""Corrected columns in raw-reading exports: each value is the stored correction's.

The fleet of tests/storage/calibration_data.py (three kits with known PM2.5 errors)
goes through the batch writer into real PostgreSQL, and a PM2.5 correction per kit and
day is stored with ``store_fit`` (as ``bikesense calibration fit`` stores its own),
except for one kit's second day: that kit and day has none. Every exported corrected
value must equal ``apply_periods`` (the function the corrected aggregates use) on the
reading as stored, with the stored corrections read back here; empty where no
correction applies; in CSV, GeoJSON and Parquet, for admins and researchers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from api.keys import create_key
from api.roles import Role
from storage.correction_sql import version_pseudonym
from storage.corrections import load_assignments, store_fit
from storage.pseudonyms import local_days
from stream.core.calibration_corrections import Correction, CorrectionSet
from stream.core.calibration_periods import PeriodFit, apply_periods
from stream.core.partials import Metric
from stream.core.resolution import quantise
from tests.api.api_server import ServerThread
from tests.api.conftest import PSEUDONYM_KEY, app_at
from tests.api.export_files import read_csv_export, read_geojson_export, read_parquet_export
from tests.storage.calibration_data import DAY0, DAY0_MS, DAYS, KITS, write_all

pytestmark = pytest.mark.postgres

START = datetime(DAY0.year, DAY0.month, DAY0.day, tzinfo=UTC)
END = START + timedelta(days=len(DAYS))
RANGE = {"from": START.isoformat(), "to": END.isoformat(), "metrics": "pm25"}
#: The kit whose second day has no correction.
BARE_KIT = 13
DAY_TZ = "Europe/Amsterdam"
DAY_MS = 86_400_000


def _correction(kit: int, day: int) -> Correction:
    """A kit's PM2.5 correction of a day, with a humidity term (so the covariate counts)."""
    gain, offset = KITS[kit]
    start = DAY0_MS + day * DAY_MS
    return Correction(
        metric="pm25_ugm3",
        kit_id=kit,
        source="kit",
        params=(offset + 0.1 * day, gain, 0.3 * gain, 0.0),
        covariance=tuple(tuple(0.01 if i == j else 0.0 for j in range(4)) for i in range(4)),
        terms=("offset", "gain", "humidity"),
        n_pairs=12,
        kit_pairs=12,
        window_start_ms=start,
        window_end_ms=start + DAY_MS,
        residual_sd=0.5,
        humid_rh_pct=75.0,
        temperature_ref_c=20.0,
        version=f"1-{kit:04d}{day:020d}",
    )


@pytest.fixture(scope="module")
def calibrated(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """The fleet with a correction per kit and day stored, but none for BARE_KIT's
    second day (and no fleet correction to fall back on)."""
    from tests.conftest import cloned_database  # noqa: PLC0415

    with cloned_database(postgres_url, migrated_template) as url:
        write_all(url)
        fits, kits = [], {}
        for day in range(len(DAYS)):
            lo, hi = DAY0_MS + day * DAY_MS, DAY0_MS + (day + 1) * DAY_MS
            own = {(k, "pm25_ugm3"): _correction(k, day) for k in KITS}
            if day == 1:
                del own[(BARE_KIT, "pm25_ugm3")]
            fits.append(PeriodFit(lo, hi, CorrectionSet(lo, hi, kits=own)))
            kits[(lo, hi)] = sorted(KITS)
        with psycopg.connect(url, autocommit=True) as conn:
            report = store_fit(conn, fits, kits, ["pm25_ugm3"])
        assert report.periods == 2 * len(KITS) - 1
        yield url


@pytest.fixture(scope="module")
def client(calibrated: str) -> Iterator[httpx.Client]:
    with (
        ServerThread(app_at(calibrated, day_tz=DAY_TZ)) as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def keys(calibrated: str) -> dict[Role, dict[str, str]]:
    with psycopg.connect(calibrated, autocommit=True) as conn:
        return {
            role: {"X-API-Key": create_key(conn, role, label=role.value).token}
            for role in (Role.ADMIN, Role.RESEARCHER)
        }


@pytest.fixture(scope="module")
def expected(calibrated: str) -> dict[str, Any]:
    """Each stored reading's corrected PM2.5 and version by apply_periods, keyed by
    (kit, ts in ms); the readings read back as corrected_apply reads them."""
    with psycopg.connect(calibrated) as conn:
        rows = conn.execute(
            "SELECT kit_id, (extract(epoch FROM ts) * 1000)::bigint, coalesce(pm25_ugm3, 'NaN'),"
            " coalesce(humidity_pct, 'NaN'), coalesce(temperature_c, 'NaN') FROM readings"
        ).fetchall()
        assignments = load_assignments(conn, "pm25_ugm3", START, END)
    readings = np.array(
        rows,
        dtype=[
            ("kit_id", "<i8"),
            ("ts_ms", "<i8"),
            ("pm25_ugm3", "<f8"),
            ("humidity_pct", "<f8"),
            ("temperature_c", "<f8"),
        ],
    )
    # Stored as real: back to the kit's decimals, as storage.corrected_apply does.
    readings["pm25_ugm3"] = quantise(Metric.PM25, readings["pm25_ugm3"].astype(np.float32))
    for name, metric in (("humidity_pct", Metric.HUMIDITY), ("temperature_c", Metric.TEMPERATURE)):
        readings[name] = quantise(metric, readings[name].astype(np.float32))
    values, _, versions = apply_periods(readings, assignments, "pm25_ugm3")
    days = local_days(readings["ts_ms"], DAY_TZ)
    return {
        "by_reading": {
            (int(k), int(t)): (float(v), str(ver))
            for k, t, v, ver in zip(
                readings["kit_id"], readings["ts_ms"], values, versions, strict=True
            )
        },
        # A researcher's rows: (second, raw) → corrected, and the daily names.
        "by_second": sorted(
            (
                int(t) // 1000,
                float(r),
                None if np.isnan(v) else float(v),
                ver and version_pseudonym(ver, d.astype(object), PSEUDONYM_KEY),
            )
            for t, r, v, ver, d in zip(
                readings["ts_ms"], readings["pm25_ugm3"], values, versions, days, strict=True
            )
        ),
        "versions": sorted({str(v) for v in versions} - {""}),
        "bare": int(np.count_nonzero(readings["kit_id"] == BARE_KIT) // 2),
    }


def _get(client: httpx.Client, headers: dict[str, str], fmt: str) -> bytes:
    r = client.get("/v1/exports/readings", params={**RANGE, "format": fmt}, headers=headers)
    assert r.status_code == 200, r.text
    return r.content


def _ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _admin_rows(client: httpx.Client, headers: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """(kit, ts ms, corrected or None, version or None) of every row, in each format."""
    csv = read_csv_export(_get(client, headers, "csv"))
    assert csv.corrections is not None
    geo = read_geojson_export(_get(client, headers, "geojson"))
    table = read_parquet_export(_get(client, headers, "parquet"))

    def num(text: str) -> float | None:
        return float(text) if text else None

    out = {
        "csv": [
            (
                int(r["kit_id"]),
                _ms(r["ts"]),
                num(r["pm25_corrected_ugm3"]),
                r["pm25_correction_version"] or None,
            )
            for r in csv.rows
        ],
        "geojson": [
            (p["kit_id"], _ms(p["ts"]), p["pm25_corrected_ugm3"], p["pm25_correction_version"])
            for p in (f["properties"] for f in geo["features"])
        ],
        "parquet": [
            (k, int(t.timestamp() * 1000), y, v)
            for k, t, y, v in zip(
                *(
                    table.column(c).to_pylist()
                    for c in ("kit_id", "ts", "pm25_corrected_ugm3", "pm25_correction_version")
                ),
                strict=True,
            )
        ],
    }
    out["corrections"] = [
        csv.corrections,
        geo["bikesense_corrections"],
        json.loads(read_parquet_meta(_get(client, headers, "parquet"))),
    ]
    return out


def read_parquet_meta(data: bytes) -> bytes:
    import io  # noqa: PLC0415

    import pyarrow.parquet as pq  # noqa: PLC0415

    meta = pq.read_metadata(io.BytesIO(data)).metadata
    assert meta is not None
    return meta[b"bikesense_corrections"]


def test_an_admin_export_carries_each_reading_s_stored_correction(
    client: httpx.Client, keys: dict[Role, dict[str, str]], expected: dict[str, Any]
) -> None:
    rows = _admin_rows(client, keys[Role.ADMIN])
    want = expected["by_reading"]
    for fmt in ("csv", "geojson", "parquet"):
        got = rows[fmt]
        assert len(got) == len(want), fmt
        bare = 0
        for kit, ts, value, version in got:
            y, v = want[(kit, ts)]
            if np.isnan(y):
                assert value is None, (fmt, kit, ts)
                assert version is None, (fmt, kit, ts)
                bare += kit == BARE_KIT
            else:
                # Exactly: the text is the float's shortest repr, Parquet the float itself.
                assert value == y, (fmt, kit, ts, value, y)
                assert version == v, (fmt, kit, ts)
        # Half of the bare kit's readings (its second day) have no correction.
        assert bare == expected["bare"] > 0, fmt
    for corrections in rows["corrections"]:
        assert corrections == {"pm25": expected["versions"]}


def test_a_researcher_export_carries_them_with_daily_names_of_the_versions(
    client: httpx.Client, keys: dict[Role, dict[str, str]], expected: dict[str, Any]
) -> None:
    headers = keys[Role.RESEARCHER]
    csv = read_csv_export(_get(client, headers, "csv"))
    geo = read_geojson_export(_get(client, headers, "geojson"))
    table = read_parquet_export(_get(client, headers, "parquet"))

    def num(text: str) -> float | None:
        return float(text) if text else None

    got = {
        "csv": [
            (
                _ms(r["ts"]) // 1000,
                float(r["pm25_ugm3"]),
                num(r["pm25_corrected_ugm3"]),
                r["pm25_correction_version"],
            )
            for r in csv.rows
        ],
        "geojson": [
            (
                _ms(p["ts"]) // 1000,
                p["pm25_ugm3"],
                p["pm25_corrected_ugm3"],
                p["pm25_correction_version"] or "",
            )
            for p in (f["properties"] for f in geo["features"])
        ],
        "parquet": [
            (int(t.timestamp()), float(np.float64(np.round(r, 1))), y, v or "")
            for t, r, y, v in zip(
                *(
                    table.column(c).to_pylist()
                    for c in ("ts", "pm25_ugm3", "pm25_corrected_ugm3", "pm25_correction_version")
                ),
                strict=True,
            )
        ],
    }
    for fmt, rows in got.items():
        assert sorted(rows, key=str) == sorted(expected["by_second"], key=str), fmt
    # No stored version appears: they would link a kit's days.
    text = json.dumps(geo)
    assert not any(v in text for v in expected["versions"])
    # The corrections in force for the exported kits over the export's local days: those
    # used, and here also those of the UTC day's last hour, which has no readings.
    names = {v for *_, v in expected["by_second"] if v}
    assert csv.corrections is not None
    assert names <= set(csv.corrections["pm25"])
    assert len(csv.corrections["pm25"]) < 2 * len(names)
    assert geo["bikesense_corrections"] == csv.corrections
