"""End to end on the simulator's fleet with known errors: corrected beats raw in the database.

The campaign of tests/stream/test_calibration.py (seed 3: 10 kits with drawn gain,
offset, humidity response and NO2 drift, 14 days of 5 h rounds, one traffic and three
background stations measuring the truth) goes through the stream core and the batch
writer into real PostgreSQL; the stations' hours are imported as a CSV and their kinds
recorded; ``run_fit`` pairs, fits, stores and corrects, as ``bikesense calibration fit``
does. The corrected cell-hour means *read back from the database* are then compared
with the truth over the same readings: closer than the raw ones, for every metric.
Deterministic: fixed seed and start, no clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from h3.api import basic_int as h3int

from simulators.campaign_store import store_campaign
from simulators.fleet import SimulationConfig
from simulators.reference import Campaign, CampaignSpec, simulate_campaign
from storage.calibration_run import data_days, run_fit
from stream.core.partials import Metric
from stream.core.policy import DEFAULT_POLICY

pytestmark = pytest.mark.postgres

RESOLUTIONS = (7, 8, 9, 10)
WINDOWS = (60, 900, 3600, 86400)
METRICS = {Metric.PM25: "pm25_ugm3", Metric.PM10: "pm10_ugm3", Metric.NO2: "no2_ugm3"}


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    config = SimulationConfig(n_bikes=10, duration_s=5 * 3600, seed=3, reading_interval_s=10.0)
    return simulate_campaign(config, CampaignSpec(days=14))


@pytest.fixture(scope="module")
def stored(
    campaign: Campaign, postgres_url: str, migrated_template: str
) -> Iterator[tuple[str, Any]]:
    from tests.conftest import cloned_database  # noqa: PLC0415

    with cloned_database(postgres_url, migrated_template) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            store_campaign(conn, campaign, RESOLUTIONS, WINDOWS)
            days = data_days(conn)
            assert days is not None
            report = run_fit(conn, *days, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
        yield url, report


def _cell_hour_rmse(
    conn: psycopg.Connection[Any], c: Campaign, metric: Metric
) -> tuple[float, float, int]:
    """RMSE against the truth of the raw and the corrected cell-hour means at resolution 9
    as stored, over the cell-hours with a corrected figure; and how many those are."""
    col = METRICS[metric]
    name = metric.api_name
    rows = conn.execute(
        f"SELECT w.cell, (extract(epoch FROM w.window_start) * 1000)::bigint,"
        f" w.{name}_sum / w.{name}_n, c.{name}_sum / c.{name}_n"
        f" FROM cell_windows w JOIN cell_windows_corrected c"
        f" USING (resolution, window_s, window_start, cell)"
        f" WHERE w.resolution = 9 AND w.window_s = 3600 AND c.{name}_n > 0"
        f" AND c.{name}_n = w.{name}_n"
    ).fetchall()
    # The truth over the same readings: those the publication policy let in, by identity.
    stored = conn.execute(
        "SELECT kit_id, boot_id, seq, idx, (extract(epoch FROM ts) * 1000)::bigint, cell,"
        f" qa_flags, coalesce({col}, 'NaN'), interval_ms FROM readings WHERE cell IS NOT NULL"
    ).fetchall()
    truth_of = {
        (int(k), int(b), int(s), int(i), int(t)): float(v)
        for k, b, s, i, t, v in zip(
            c.readings["kit_id"],
            c.readings["boot_id"],
            c.readings["seq"],
            c.readings["idx"],
            c.readings["ts_ms"],
            c.readings[f"true_{col}"],
            strict=True,
        )
    }
    arr = np.zeros(
        len(stored),
        dtype=[("qa_flags", "<u4"), (col, "<f8"), ("interval_ms", "<i8"), ("cell", "<i8")],
    )
    arr["cell"] = [r[5] for r in stored]  # every one has a cell (WHERE cell IS NOT NULL)
    arr["qa_flags"] = [r[6] for r in stored]
    arr[col] = [r[7] for r in stored]
    arr["interval_ms"] = [r[8] for r in stored]
    ok = DEFAULT_POLICY.publishable(arr, metric)
    sums: dict[tuple[int, int], list[float]] = {}
    for row, use in zip(stored, ok.tolist(), strict=True):
        if not use:
            continue
        key = (h3int.cell_to_parent(int(row[5]), 9), int(row[4]) // 3_600_000 * 3_600_000)
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += truth_of[tuple(int(v) for v in row[:5])]  # type: ignore[index]
        acc[1] += 1
    raw_err, cor_err = [], []
    for cell, start, raw, corrected in rows:
        total, n = sums[(int(cell), int(start))]
        truth = total / n
        raw_err.append(raw - truth)
        cor_err.append(corrected - truth)
    return (
        float(np.sqrt(np.mean(np.square(raw_err)))),
        float(np.sqrt(np.mean(np.square(cor_err)))),
        len(rows),
    )


def test_corrected_cell_hour_means_in_the_database_are_closer_to_the_truth(
    campaign: Campaign, stored: tuple[str, Any]
) -> None:
    url, report = stored
    assert report.pairs.inserted > 500
    assert report.applied is not None
    assert report.applied.recomputed
    with psycopg.connect(url) as conn:
        total = conn.execute(
            "SELECT count(*) FROM cell_windows WHERE resolution = 9 AND window_s = 3600"
            " AND pm25_n > 0"
        ).fetchone()
        assert total is not None
        # What the corrected variant costs beside the raw aggregates (shown with -s).
        sizes = conn.execute(
            "SELECT pg_total_relation_size('cell_windows'),"
            " pg_total_relation_size('cell_windows_corrected'),"
            " (SELECT count(*) FROM cell_windows), (SELECT count(*) FROM cell_windows_corrected)"
        ).fetchone()
        print(f"cell_windows {sizes}")
        for metric, bound in ((Metric.PM25, 0.5), (Metric.PM10, 0.5), (Metric.NO2, 0.95)):
            raw, corrected, n = _cell_hour_rmse(conn, campaign, metric)
            print(
                f"{metric.api_name}: {n} cell-hours, RMSE raw {raw:.2f}"
                f" -> corrected {corrected:.2f}"
            )
            assert n > 0.9 * total[0]  # nearly every cell-hour has a corrected figure
            assert corrected < bound * raw, (metric, raw, corrected)
