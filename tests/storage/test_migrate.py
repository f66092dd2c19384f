"""Migrations: from empty, re-run, concurrent runs, edited files, both backends' variants."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import replace
from datetime import timedelta
from importlib import resources
from typing import Any

import numpy as np
import psycopg
import pytest

from storage.exceptions import MigrationError
from storage.migrate import (
    COMMENT_ONLY_EDITS,
    Backend,
    Migration,
    is_comment_only_edit,
    load_migrations,
    migrate,
    recorded_backend,
)
from storage.writer import MS_PER_DAY
from stream.core.partials import HIST_BINS
from tests.conftest import selected_backend
from tests.storage.storage_factories import T0_MS, make_readings
from tests.storage.storage_reference import (
    ReferenceAggregate,
    assert_partials_equal,
    cell_windows_of,
    presence,
    ride_counts,
    stored_ride_counts,
)

pytestmark = pytest.mark.postgres

EXPECTED_TABLES = {
    "kits",
    "readings",
    "cell_windows",
    "window_presence",
    "window_rides",
    "rejected_frames",
    "h3_cells",
    "reference_stations",
    "reference_values",
    "schema_migrations",
}


def tables(conn: psycopg.Connection[tuple[str]]) -> set[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE nspname = 'public' AND relkind IN ('r', 'p')"
    ).fetchall()
    return {r[0] for r in rows}


def test_migrate_from_empty_then_rerun(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert recorded_backend(conn) is None
        # The harness's server has TimescaleDB preloaded only under the TimescaleDB switch.
        expected, other = (
            (Backend.TIMESCALE, Backend.PLAIN)
            if selected_backend() == "timescale"
            else (Backend.PLAIN, Backend.TIMESCALE)
        )
        report = migrate(conn)
        assert report.backend is expected
        assert report.applied == tuple(m.version for m in load_migrations(expected))
        assert tables(conn) >= EXPECTED_TABLES
        again = migrate(conn)
        assert again.applied == ()
        assert again.current_version == report.current_version
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(report.applied),
        )
        with pytest.raises(MigrationError, match=f"created for the {expected} backend"):
            migrate(conn, backend=other)


def test_concurrent_migrations_apply_once(database_url: str) -> None:
    errors: list[BaseException] = []
    reports = []

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                reports.append(migrate(conn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r.applied) for r in reports)[-1] > 0
    assert sum(len(r.applied) for r in reports) == len(load_migrations(Backend.PLAIN))


def test_an_edited_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            migrate(conn)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, backend, checksum)"
            " VALUES (9999, 'future', 'plain', 'y')"
        )
        with pytest.raises(MigrationError, match="does not know"):
            migrate(conn)


# The comment-only edits of applied migrations (storage.migrate.COMMENT_ONLY_EDITS), as
# replacements that turn each file's text now back into the text databases applied: its
# comments cited the design document by its former name and modules since split or moved.
OLD_COMMENTS = {
    "0001_core.sql": [("docs/design.md", "DESIGN.md")],
    "0002_readings.timescale.sql": [("docs/design.md", "DESIGN.md")],
    "0004_window_rides.sql": [("docs/design.md", "DESIGN.md")],
    "0005_readings_held.sql": [
        ("docs/design.md", "DESIGN.md"),
        ("storage.readings.READING_COLUMNS", "storage.writer.READING_COLUMNS"),
    ],
    "0101_presence_by_cell.sql": [
        ("(storage/cell_means.py, tiles)", "(api/queries_extra.py, tiles)")
    ],
    "0104_growing_tables.timescale.sql": [("(storage/merged_stats.py,", "(storage/queries.py,")],
}


def _file_name(migration: Migration) -> str:
    variant = f".{migration.variant}" if migration.variant else ""
    return f"{migration.version:04d}_{migration.name}{variant}.sql"


def old_text(migration: Migration) -> str:
    """The text a database applied before the comment-only edits (the text now if none)."""
    text = migration.text
    for new, old in OLD_COMMENTS.get(_file_name(migration), []):
        assert new in text, (_file_name(migration), new)
        text = text.replace(new, old)
    return text


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_accepted_edits_changed_comments_only() -> None:
    """Each entry of COMMENT_ONLY_EDITS goes from the old text to the file now, and the
    two differ in comment lines only."""
    edited = {
        m for backend in Backend for m in load_migrations(backend) if _file_name(m) in OLD_COMMENTS
    }
    assert {_file_name(m) for m in edited} == set(OLD_COMMENTS)
    assert {(m.version, _checksum(old_text(m))) for m in edited} == set(COMMENT_ONLY_EDITS)
    for m in edited:
        old = old_text(m)
        assert is_comment_only_edit(m, _checksum(old))
        changed = [
            (a, b) for a, b in zip(old.splitlines(), m.text.splitlines(), strict=True) if a != b
        ]
        assert changed, m.name
        for a, b in changed:
            assert a.lstrip().startswith("--"), a
            assert b.lstrip().startswith("--"), b
    # Anything more than the listed edit is not one.
    m = min(edited, key=_file_name)
    assert not is_comment_only_edit(
        replace(m, text=m.text + "\nDROP TABLE kits;"), _checksum(old_text(m))
    )
    for backend in Backend:
        for m in load_migrations(backend):
            assert "DESIGN.md" not in m.text, _file_name(m)


def test_a_database_migrated_with_the_old_comments_migrates_cleanly(database_url: str) -> None:
    """A database whose migrations ran with the old comments: its checksums are updated,
    nothing is applied again, and the next run finds nothing to do."""
    backend = Backend(selected_backend())
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, backend=backend, target=0)  # schema_migrations only
        # What an older bikesense did: run each file's text as it was then and record it.
        for m in load_migrations(backend):
            with conn.transaction():
                conn.execute(old_text(m).encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, backend, checksum)"
                    " VALUES (%s, %s, %s, %s)",
                    (m.version, m.name, str(backend), _checksum(old_text(m))),
                )
        edited = tuple(m.version for m in load_migrations(backend) if old_text(m) != m.text)
        assert {1, 4, 5, 101} <= set(edited)
        report = migrate(conn)
        assert (report.applied, report.comments_updated) == ((), edited)
        recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        assert recorded == {m.version: m.checksum for m in load_migrations(backend)}
        again = migrate(conn)
        assert (again.applied, again.comments_updated) == ((), ())


def test_a_changed_migration_is_refused_whatever_its_old_comments(database_url: str) -> None:
    """Only the exact old text of a comment-only edit is accepted: the old text with more
    in it, or the old text of another version, is a changed migration, and stays recorded
    as it was."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        backend = migrate(conn).backend
        current = {m.version: m.checksum for m in load_migrations(backend)}
        old_core = old_text(load_migrations(backend)[0])
        cases = {
            1: _checksum(old_core + "\nCREATE TABLE extra (id int);\n"),  # the old text, and more
            4: _checksum(old_core),  # another version's old text
        }
        for version, checksum in cases.items():
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s", (checksum, version)
            )
            with pytest.raises(MigrationError, match="was changed after it was applied"):
                migrate(conn)
            row = conn.execute(
                "SELECT checksum FROM schema_migrations WHERE version = %s", (version,)
            ).fetchone()
            assert row == (checksum,)
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                (current[version], version),
            )


def test_a_migration_numbered_below_the_newest_applied_is_refused(database_url: str) -> None:
    """A migration added below the newest one a database has would run after the newer
    ones there and before them in a new database: refused, with nothing applied."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")  # as if 0005 were new
        with pytest.raises(MigrationError, match="0005_readings_held is numbered below"):
            migrate(conn)
        row = conn.execute("SELECT count(*) FROM schema_migrations WHERE version = 5").fetchone()
        assert row == (0,)


def test_0004_counts_the_rides_already_stored(database_url: str) -> None:
    readings = np.concatenate(
        [make_readings(90, kit_id=k, ride_id=k, seed=k, step_ms=20_000) for k in (1, 2, 3)]
    )
    rows = presence(readings, (8, 10), (60, 3600))
    rows = np.concatenate([rows, rows[:5]])
    rows["day"][-5:] += 1  # one ride seen with two days: one ride, two days
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A database from before 0004, with presence rows an older writer stored.
        migrate(conn, target=3)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO window_presence"
                " (resolution, cell, window_s, window_start, ride_id, day)"
                " VALUES (%s, %s, %s, to_timestamp(%s / 1000.0), %s, %s)",
                [tuple(int(v) for v in r[:6]) for r in rows.tolist()],
            )
        assert migrate(conn, target=4).applied == (4,)
        assert stored_ride_counts(conn) == ride_counts(rows)
        assert max(r for r, _ in ride_counts(rows).values()) == 3


def test_a_connection_in_a_transaction_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(MigrationError, match="outside any transaction"):
            migrate(conn)


def _columns(text: str) -> list[str]:
    body = text[text.index("CREATE TABLE readings (") :]
    body = body[: body.index("PRIMARY KEY")]
    return [line.strip() for line in body.splitlines()[1:] if line.strip()]


def test_both_backends_define_the_same_readings_table() -> None:
    files = resources.files("storage.migrations")
    plain = _columns(files.joinpath("0002_readings.plain.sql").read_text())
    timescale = _columns(files.joinpath("0002_readings.timescale.sql").read_text())
    assert plain == timescale
    assert len(plain) == 25
    assert [re.split(r"\s+", c)[0] for c in plain][:5] == ["kit_id", "boot_id", "seq", "idx", "ts"]
    assert [m.version for m in load_migrations(Backend.PLAIN)] == [
        m.version for m in load_migrations(Backend.TIMESCALE)
    ]


def store_as_before_0007(conn: psycopg.Connection[Any], partials: np.ndarray) -> None:
    """Rows in the narrow table as 0001 made it, as an older writer stored them."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO window_partials (metric, resolution, cell, window_s, window_start,"
            " n, sum, sumsq, min, max, energy, duration_s, lamax_db, hist)"
            " VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, %s,"
            " NULLIF(%s, 'NaN'), %s)",
            [
                (
                    *(
                        int(p[k])
                        for k in (
                            "metric",
                            "resolution",
                            "cell",
                            "window_s",
                            "window_start_ms",
                            "n",
                        )
                    ),
                    *(
                        float(p[k])
                        for k in ("sum", "sumsq", "min", "max", "energy", "duration_s", "lamax_db")
                    ),
                    p["hist"].tolist(),
                )
                for p in partials
            ],
        )


def test_0007_moves_the_partials_into_cell_windows(database_url: str) -> None:
    readings = np.concatenate([make_readings(300, kit_id=k, ride_id=k, seed=k) for k in (1, 2)])
    readings["no2_ugm3"][:100] = 20.0  # NO2 in some cell-windows only
    partials = ReferenceAggregate()(readings)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert migrate(conn, target=6).applied == (1, 2, 3, 4, 5, 6)
        store_as_before_0007(conn, partials)
        report = migrate(conn)
        assert report.applied[0] == 7
        assert_partials_equal(conn, partials)  # read back through the window_partials view
        assert conn.execute("SELECT count(*) FROM cell_windows").fetchone() == (
            cell_windows_of(partials),
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM cell_windows WHERE no2_n = 0"
                " AND no2_hist IS NULL AND no2_min IS NULL"
            ).fetchone()[0]
            > 0
        )


def test_0111_cuts_every_stored_histogram_to_its_counted_bins(database_url: str) -> None:
    # A month old: on TimescaleDB its chunks were compressed (by the 7-day policy) and are
    # read, moved and compressed again.
    t0_ms = T0_MS - 30 * MS_PER_DAY
    readings = np.concatenate(
        [make_readings(300, kit_id=k, ride_id=k, seed=k, t0_ms=t0_ms) for k in (1, 2)]
    )
    readings["no2_ugm3"][:100] = 20.0  # NO2 in some cell-windows only
    partials = ReferenceAggregate()(readings)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, target=6)
        store_as_before_0007(conn, partials)
        report = migrate(conn, target=110)  # cell_windows with histograms of 32 bins
        timescale = report.backend is Backend.TIMESCALE
        if timescale:
            conn.execute("SELECT compress_chunk(c) FROM show_chunks('cell_windows') c")
        assert migrate(conn).applied[0] == 111
        assert_partials_equal(conn, partials)  # every histogram's 32 bins as they were
        assert conn.execute("SELECT count(*) FROM cell_windows").fetchone() == (
            cell_windows_of(partials),
        )
        stored = conn.execute(
            "SELECT o, h, bikesense_hist_dense(o, h) FROM cell_windows, LATERAL (VALUES"
            " (pm1_hist_offset, pm1_hist), (pm25_hist_offset, pm25_hist),"
            " (pm10_hist_offset, pm10_hist), (no2_hist_offset, no2_hist),"
            " (noise_hist_offset, noise_hist), (temperature_hist_offset, temperature_hist),"
            " (humidity_hist_offset, humidity_hist)) AS v (o, h) WHERE h IS NOT NULL"
        ).fetchall()
        assert len(stored) == len(partials)
        for offset, hist, bins in stored:
            assert hist[0] > 0
            assert hist[-1] > 0
            assert bins == [0] * offset + hist + [0] * (HIST_BINS - offset - len(hist))
        assert sum(len(hist) for _, hist, _ in stored) < len(stored) * HIST_BINS
        if timescale:
            assert conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE is_compressed)"
                " FROM timescaledb_information.chunks WHERE hypertable_name = 'cell_windows'"
            ).fetchone() == (1, 1)


CORRECTED_METRICS = ("pm1", "pm25", "pm10", "no2")


def _corrected_rows_as_0110(seed: int, rows: int) -> list[tuple[Any, ...]]:
    """Rows of cell_windows_corrected as migration 0110 stored them (histograms of 32
    bins): sparse random histograms, a metric absent from some rows, a bin at each end of
    the range in some."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        values: list[Any] = [10, 3600, i // 20, 600_000_000_000 + i % 20]
        for m in range(len(CORRECTED_METRICS)):
            if rng.random() < 0.25 and m:  # no corrected value of this metric here
                values += [0, 0.0, 0.0, None, None, None, 0.0]
                continue
            hist = np.zeros(HIST_BINS, dtype=np.int64)
            lo = int(rng.integers(0, HIST_BINS))
            hi = int(rng.integers(lo, HIST_BINS))
            hist[lo] = rng.integers(1, 1000)
            hist[hi] += rng.integers(1, 1000)
            hist[lo:hi] += rng.integers(0, 3, hi - lo) * (rng.random(hi - lo) < 0.5)
            n = int(hist.sum())
            values += [n, n * 12.5, n * 200.0, 1.0 + lo, 2.0 + hi, hist.tolist(), n * 0.3]
        out.append(tuple(values))
    return out


def test_0113_carries_the_corrected_windows_over_cut_to_their_counted_bins(
    database_url: str,
) -> None:
    columns = ", ".join(
        f"{m}_{f}" for m in CORRECTED_METRICS for f in ("n", "sum", "sumsq", "min", "max")
    )
    old = _corrected_rows_as_0110(seed=5, rows=200)
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = migrate(conn, target=112)
        timescale = report.backend is Backend.TIMESCALE
        now = conn.execute("SELECT now()").fetchone()
        assert now is not None
        # A month before the server's now and the days after it: on TimescaleDB the
        # chunks older than the compression policy's 7 days are compressed by 0113.
        placeholders = ", ".join(["%s"] * 4 + ["%s"] * 7 * len(CORRECTED_METRICS))
        names = ", ".join(
            f"{m}_{f}"
            for m in CORRECTED_METRICS
            for f in ("n", "sum", "sumsq", "min", "max", "hist", "u_sum")
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO cell_windows_corrected (resolution, window_s, window_start, cell,"
                f" {names}) VALUES ({placeholders})",
                [(r[0], r[1], now[0] - timedelta(days=30 - r[2]), *r[3:]) for r in old],
            )
        before = conn.execute(
            f"SELECT resolution, window_s, window_start, cell, {columns},"
            " pm1_hist, pm25_hist, pm10_hist, no2_hist, pm1_u_sum, pm25_u_sum, pm10_u_sum,"
            " no2_u_sum FROM cell_windows_corrected ORDER BY 1, 2, 3, 4"
        ).fetchall()
        assert migrate(conn).applied[0] == 113
        after = conn.execute(
            f"SELECT resolution, window_s, window_start, cell, {columns},"
            + ", ".join(
                f" bikesense_hist_dense({m}_hist_offset, {m}_hist)" for m in CORRECTED_METRICS
            )
            + ", pm1_u_sum, pm25_u_sum, pm10_u_sum, no2_u_sum"
            " FROM cell_windows_corrected ORDER BY 1, 2, 3, 4"
        ).fetchall()
        assert after == before  # every row, every histogram's 32 bins as they were
        stored = conn.execute(
            "SELECT h FROM cell_windows_corrected, LATERAL (VALUES (pm1_hist), (pm25_hist),"
            " (pm10_hist), (no2_hist)) AS v (h) WHERE h IS NOT NULL"
        ).fetchall()
        assert all(h[0] > 0 and h[-1] > 0 for (h,) in stored)
        assert sum(len(h) for (h,) in stored) < len(stored) * HIST_BINS
        # A histogram that is not cut to its counted bins is refused.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "UPDATE cell_windows_corrected SET pm1_hist = array_prepend(0, pm1_hist),"
                " pm1_hist_offset = pm1_hist_offset - 1 WHERE pm1_hist_offset > 0"
            )
        if timescale:
            chunks = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE is_compressed AND range_end"
                " <= now() - interval '7 days') + count(*) FILTER (WHERE NOT is_compressed"
                " AND range_end > now() - interval '7 days')"
                " FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'cell_windows_corrected'"
            ).fetchone()
            assert chunks is not None
            assert chunks[0] == chunks[1] > 1  # daily chunks, the old ones compressed


def test_0007_refuses_partials_of_an_unknown_metric(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, target=6)
        conn.execute(
            "INSERT INTO window_partials (metric, resolution, cell, window_s, window_start, n,"
            " sum, sumsq, min, max, hist) VALUES (9, 10, 1, 60, now(), 1, 1, 1, 1, 1, %s)",
            ([1] * 32,),
        )
        with pytest.raises(MigrationError, match=r"metrics other than 1\.\.7"):
            migrate(conn)
        assert conn.execute("SELECT count(*) FROM window_partials").fetchone() == (1,)
