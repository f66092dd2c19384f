"""The export's corrected values, computed by PostgreSQL, equal apply_correction's bit for bit.

Random readings stored as ``real`` (as ``readings`` stores them), random corrections
with and without a humidity and a temperature term, some readings without the value,
the humidity or the temperature: the database's value (storage/correction_sql.py) and
the core's (stream.core.calibration_corrections.apply_correction on the quantised
inputs, as storage/corrected_apply.py corrects them) must be the same float.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from storage.correction_sql import alias, corrected_sql, day_assignments, join_sql, version_sql
from storage.exceptions import QueryError
from stream.core.calibration_corrections import Correction
from stream.core.calibration_periods import Assignment, apply_periods
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.resolution import quantise

pytestmark = pytest.mark.postgres

DAY_MS = 86_400_000
T0_MS = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        yield c


def _correction(rng: np.random.Generator, kit: int, metric: str, i: int) -> Correction:
    humid = i % 3 != 0
    temp = i % 2 == 0
    cov = rng.normal(size=(4, 4))
    return Correction(
        metric=metric,
        kit_id=kit,
        source="kit",
        params=(
            float(rng.normal(2, 3)),
            float(rng.uniform(0.5, 1.6)),
            float(rng.uniform(0.05, 0.6)) if humid else 0.0,
            float(rng.normal(0, 0.4)) if temp else 0.0,
        ),
        covariance=tuple(tuple(float(v) for v in row) for row in (cov @ cov.T) * 1e-3),
        terms=("offset", "gain"),
        n_pairs=20,
        kit_pairs=20,
        window_start_ms=T0_MS - 10 * DAY_MS,
        window_end_ms=T0_MS + 10 * DAY_MS,
        residual_sd=1.0,
        humid_rh_pct=float(rng.choice([70.0, 75.0, 80.5])),
        temperature_ref_c=20.0,
        version=f"1-{kit:04d}{i:020d}",
    )


def _readings(rng: np.random.Generator, n: int, kits: list[int]) -> np.ndarray:
    dtype = [
        ("kit_id", "<i8"),
        ("ts_ms", "<i8"),
        ("pm25_ugm3", "<f4"),
        ("humidity_pct", "<f4"),
        ("temperature_c", "<f4"),
    ]
    out = np.zeros(n, dtype=dtype)
    out["kit_id"] = rng.choice(kits, n)
    out["ts_ms"] = T0_MS + rng.integers(0, 2 * DAY_MS, n)
    out["pm25_ugm3"] = np.round(rng.uniform(0, 300, n), 1)
    out["humidity_pct"] = np.round(rng.uniform(20, 100, n), 1)
    out["temperature_c"] = np.round(rng.uniform(-10, 35, n), 2)
    for name, share in (("pm25_ugm3", 0.05), ("humidity_pct", 0.1), ("temperature_c", 0.1)):
        out[name][rng.random(n) < share] = np.nan
    return out


def _in_database(
    conn: psycopg.Connection[Any], rows: np.ndarray, params: dict[str, list[Any]]
) -> tuple[np.ndarray, list[str | None]]:
    metric = Metric.PM25
    query = sql.SQL(
        "SELECT {y}, {v} FROM unnest(%(kit)s::bigint[], %(ts)s::timestamptz[], %(pm)s::real[],"
        " %(rh)s::real[], %(t)s::real[], %(i)s::int[])"
        " AS r(kit_id, ts, pm25_ugm3, humidity_pct, temperature_c, i){join} ORDER BY r.i"
    ).format(y=corrected_sql(metric).sql, v=version_sql(metric), join=join_sql(metric))

    def nullable(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values.tolist()]

    got = conn.execute(
        query,
        {
            "kit": rows["kit_id"].tolist(),
            "ts": [datetime.fromtimestamp(t / 1000, UTC) for t in rows["ts_ms"].tolist()],
            "pm": nullable(rows["pm25_ugm3"]),
            "rh": nullable(rows["humidity_pct"]),
            "t": nullable(rows["temperature_c"]),
            "i": list(range(len(rows))),
            **params,
        },
    ).fetchall()
    assert len(got) == len(rows), "a reading joined to more than one correction"
    return np.array([np.nan if y is None else y for y, _ in got]), [v for _, v in got]


def test_the_database_computes_what_apply_correction_computes(
    conn: psycopg.Connection[Any],
) -> None:
    rng = np.random.default_rng(26)
    kits = [11, 12, 13, 14, 15, 16, 17]
    rows = _readings(rng, 30_000, kits)
    # Kit 17 has none; the others a correction per day, kit 16 on the second day only.
    assignments = [
        Assignment(
            kit,
            T0_MS + d * DAY_MS,
            T0_MS + (d + 1) * DAY_MS,
            _correction(rng, kit, "pm25_ugm3", 2 * i + d),
        )
        for i, kit in enumerate(kits[:-1])
        for d in range(2)
        if not (kit == 16 and d == 0)
    ]
    params = day_assignments(Metric.PM25, assignments, T0_MS, T0_MS + 2 * DAY_MS)
    got, versions = _in_database(conn, rows, params)

    # The reference: the inputs as corrected_apply reads them back, apply_periods over them.
    exact = rows.astype(
        [(n, "<f8" if rows.dtype[n].kind == "f" else "<i8") for n in rows.dtype.names or ()]
    )
    for name, metric in (
        ("pm25_ugm3", Metric.PM25),
        ("humidity_pct", Metric.HUMIDITY),
        ("temperature_c", Metric.TEMPERATURE),
    ):
        exact[name] = quantise(metric, rows[name])
    want, _, want_versions = apply_periods(exact, assignments, METRIC_COLUMNS[Metric.PM25])

    assert np.isfinite(want).sum() > 15_000  # most readings are corrected ...
    assert np.isnan(want).sum() > 3_000  # ... and enough are not, for each reason
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    both = np.isfinite(want)
    assert np.array_equal(got[both].view(np.int64), want[both].view(np.int64)), "not bit for bit"
    assert [v or "" for v in versions] == want_versions.tolist()
    no_correction = (rows["kit_id"] == 17) | (
        (rows["kit_id"] == 16) & (rows["ts_ms"] < T0_MS + DAY_MS)
    )
    assert np.isnan(got[no_correction]).all()


def test_overlapping_periods_of_a_kit_are_refused() -> None:
    rng = np.random.default_rng(3)
    a = Assignment(11, T0_MS, T0_MS + DAY_MS, _correction(rng, 11, "pm25_ugm3", 1))
    b = Assignment(
        11, T0_MS + DAY_MS // 2, T0_MS + 2 * DAY_MS, _correction(rng, 11, "pm25_ugm3", 2)
    )
    with pytest.raises(QueryError, match="kit 11 has overlapping correction periods"):
        day_assignments(Metric.PM25, [a, b], T0_MS, T0_MS + 2 * DAY_MS)
    assert alias(Metric.PM25) == "cal_pm25"
