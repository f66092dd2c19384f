"""What a ``cell_windows_corrected`` row costs, its histograms dense or cut to their counted bins.

The calibration campaign of ``tests/storage/test_calibration_simulated.py`` (the
simulator's 10 kits with drawn errors, 14 days of 5-hour rounds, seed 3, one traffic and
three background reference stations; resolutions 7-10, windows of 1 min to 1 day) goes
through the stream core and the batch writer into a fresh database of each backend
(bench_storage's throwaway clusters: plain PostgreSQL always, TimescaleDB when the
extension is installed), is paired, fitted and corrected as ``bikesense calibration fit``
does, and ``cell_windows_corrected`` is measured as stored (since migration 0113: each
histogram from its first counted bin to its last) and as migration 0110 stored it (every
histogram's 32 bins: the same rows copied into a table made by 0110's own ``CREATE
TABLE``, with its key and index). On TimescaleDB both are then hypertables of daily
chunks with cell_windows' compression settings, measured again after compressing every
chunk. Sizes with indexes and TOAST after ``VACUUM ANALYZE``; per reading is per stored
reading. Prints a table and writes bench/results/corrected_storage.json.

    .venv/bin/python bench/bench_corrected_storage.py
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_common import RESULTS
from bench_storage import cluster, fresh_database, timescale_missing

from simulators.campaign_store import store_campaign
from simulators.fleet import SimulationConfig
from simulators.reference import CampaignSpec, simulate_campaign
from storage.calibration_run import data_days, run_fit
from storage.migrate import Backend

#: As tests/storage/test_calibration_simulated.py stores the campaign.
RESOLUTIONS = (7, 8, 9, 10)
WINDOWS = (60, 900, 3600, 86400)

MIGRATION_0110 = (
    Path(__file__).resolve().parent.parent / "storage" / "migrations" / "0110_calibration.sql"
)
METRICS = ("pm1", "pm25", "pm10", "no2")
DENSE = "cell_windows_corrected_dense"
CALIBRATION_TABLES = (
    "calibration_pairs",
    "calibration_corrections",
    "calibration_periods",
    "calibration_days",
    "reference_values",
)


def load(url: str) -> int:
    """The campaign stored, fitted and corrected; returns the readings stored."""
    campaign = simulate_campaign(
        SimulationConfig(n_bikes=10, duration_s=5 * 3600, seed=3, reading_interval_s=10.0),
        CampaignSpec(days=14),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        store_campaign(conn, campaign, RESOLUTIONS, WINDOWS)
        days = data_days(conn)
        assert days is not None
        run_fit(conn, *days, resolutions=RESOLUTIONS, window_sizes_s=WINDOWS)
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return int(row[0])


def make_dense(conn: psycopg.Connection[Any], timescale: bool) -> None:
    """The same rows in 0110's table (its own CREATE TABLE text, with its key), histograms of
    32 bins, and its index."""
    text = MIGRATION_0110.read_text()
    match = re.search(r"CREATE TABLE cell_windows_corrected \(.*?\n\);", text, re.DOTALL)
    assert match is not None
    ddl = match.group(0).replace("cell_windows_corrected", DENSE)
    conn.execute(ddl.encode())
    columns = [
        str(r[0])
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (DENSE,),
        ).fetchall()
    ]
    values = [
        f"bikesense_hist_dense({c}_offset, {c})" if c.endswith("_hist") else c for c in columns
    ]
    if timescale:
        conn.execute(
            f"SELECT create_hypertable('{DENSE}', by_range('window_start', INTERVAL '1 day'))"
        )
    conn.execute(
        f"INSERT INTO {DENSE} ({', '.join(columns)}) SELECT {', '.join(values)}"
        " FROM cell_windows_corrected ORDER BY resolution, window_s, window_start, cell"
    )
    conn.execute(f"CREATE INDEX ON {DENSE} (cell, window_s, window_start)")
    if timescale:
        conn.execute(
            f"ALTER TABLE {DENSE} SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'resolution, window_s',"
            " timescaledb.compress_orderby = 'cell, window_start')"
        )


def size(conn: psycopg.Connection[Any], table: str, timescale: bool) -> int:
    query = (
        "SELECT hypertable_size(%s::regclass)"
        if timescale
        else "SELECT pg_total_relation_size(%s::regclass)"
    )
    row = conn.execute(query, (table,)).fetchone()
    assert row is not None
    return int(row[0])


def measure(url: str, backend: Backend) -> dict[str, Any]:
    t0 = time.monotonic()
    readings = load(url)
    timescale = backend is Backend.TIMESCALE
    with psycopg.connect(url, autocommit=True) as conn:
        make_dense(conn, timescale)
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT count(*) FROM cell_windows_corrected").fetchone()
        assert row is not None
        rows = int(row[0])
        # Mean bins stored per histogram (None: a metric the campaign does not calibrate).
        spans = {
            m: conn.execute(
                f"SELECT avg(cardinality({m}_hist))::float8 FROM cell_windows_corrected"
                f" WHERE {m}_hist IS NOT NULL"
            ).fetchone()[0]  # type: ignore[index]
            for m in METRICS
        }
        same = conn.execute(
            f"SELECT count(*) FROM cell_windows_corrected c JOIN {DENSE} d"
            " USING (resolution, window_s, window_start, cell) WHERE "
            + " AND ".join(
                f"bikesense_hist_dense(c.{m}_hist_offset, c.{m}_hist)"
                f" IS NOT DISTINCT FROM d.{m}_hist"
                for m in METRICS
            )
        ).fetchone()
        assert same == (rows,), (same, rows)
        out: dict[str, Any] = {
            "readings": readings,
            "rows": rows,
            "mean_hist_bins_stored": spans,
            "bytes": {
                "dense": size(conn, DENSE, timescale),
                "cut": size(conn, "cell_windows_corrected", timescale),
                "cell_windows": size(conn, "cell_windows", timescale),
            },
        }
        # The other tables calibration fills, for how fast they grow (docs/storage.md).
        out["calibration_tables"] = {
            table: {
                "rows": int(
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                ),
                "bytes": size(conn, table, timescale=False),
            }
            for table in CALIBRATION_TABLES
        }
        if timescale:
            for table in (DENSE, "cell_windows_corrected", "cell_windows"):
                conn.execute(
                    "SELECT count(compress_chunk(c)) FROM show_chunks(%s::regclass) c", (table,)
                )
            conn.execute("VACUUM ANALYZE")
            out["bytes_compressed"] = {
                "dense": size(conn, DENSE, True),
                "cut": size(conn, "cell_windows_corrected", True),
                "cell_windows": size(conn, "cell_windows", True),
            }
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def main() -> None:
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
    }
    backends = [Backend.PLAIN]
    missing = timescale_missing()
    if missing is None:
        backends.append(Backend.TIMESCALE)
    else:
        print(f"TimescaleDB skipped: {missing}")
    for backend in backends:
        with cluster(backend) as base, fresh_database(base, backend) as url:
            results[backend.value] = measure(url, backend)
    print(f"{'':32}" + "".join(f"{b.value:>14}" for b in backends))
    for key in ("dense", "cut", "cell_windows"):
        print(
            f"bytes per reading, {key:12}"
            + "".join(
                f"{results[b.value]['bytes'][key] / results[b.value]['readings']:14.1f}"
                for b in backends
            )
        )
    if Backend.TIMESCALE in backends:
        r = results[Backend.TIMESCALE.value]
        for key in ("dense", "cut", "cell_windows"):
            print(f"compressed, {key:12} {r['bytes_compressed'][key] / r['readings']:14.1f}")
    for b in backends:
        for table, got in results[b.value]["calibration_tables"].items():
            print(f"{b.value}: {table}: {got['rows']} rows, {got['bytes']} bytes in 14 days")
    print(json.dumps(results, indent=1))
    (RESULTS / "corrected_storage.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
