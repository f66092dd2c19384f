"""Retention and partition upkeep for raw readings; aggregates are never expired here.

Plain PostgreSQL: raw readings are partitioned by UTC day. The batch writer
creates the partitions a batch needs on demand, so late data of any age lands;
:func:`ensure_partitions_ahead` creates the next days' in advance so that the
first batch after midnight does not pay for it. :func:`drop_expired` drops
whole partitions (no row-by-row DELETE, no bloat).

TimescaleDB: chunks are created by TimescaleDB, and retention policies drop
those of raw readings and refused frames past the configured period
(:func:`apply_retention`, called wherever the setting is known: migrate,
drop-expired, every maintenance round); :func:`drop_expired` runs ``drop_chunks``
in the foreground too, so the period holds even where TimescaleDB's scheduler
does not run.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from storage.migrate import Backend, recorded_backend
from storage.writer import MS_PER_DAY, ensure_partitions

#: docs/design.md decision 4: raw tracks expire. Three months is long enough to
#: re-run QA on a quarter's data and short enough to respect the riders.
DEFAULT_RAW_RETENTION = timedelta(days=90)


_EXPIRED_PARTITIONS = """
SELECT c.relname::text, i.inhdetachpending
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_d[0-9]{8}$'
  AND (to_date(substr(c.relname, 11), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
      <= %s
ORDER BY 1
"""


def drop_expired(conn: psycopg.Connection[Any], older_than: datetime) -> list[str]:
    """Drop raw-reading partitions (or chunks) that end at or before ``older_than``.

    Returns their names. Window aggregates, presence and kits stay.

    On plain PostgreSQL with an autocommit connection, each partition is first
    detached with ``DETACH PARTITION ... CONCURRENTLY``: that waits for running
    exports to finish without making writers and readers queue behind it, as a
    plain ``DROP TABLE`` of a partition (ACCESS EXCLUSIVE on ``readings``) would.
    Otherwise (inside a transaction, or on TimescaleDB) it runs in one go.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (e.g. datetime.now(UTC) - ...)")
    if conn.autocommit and recorded_backend(conn) is Backend.PLAIN:
        rows = conn.execute(_EXPIRED_PARTITIONS, (older_than,)).fetchall()
        for name, pending in rows:
            # A detach interrupted earlier is left pending: finish it instead.
            how = sql.SQL("FINALIZE" if pending else "CONCURRENTLY")
            conn.execute(
                sql.SQL("ALTER TABLE readings DETACH PARTITION {} {}").format(
                    sql.Identifier(name), how
                )
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        return [str(name) for name, _ in rows]
    with conn.transaction():
        rows = conn.execute("SELECT bikesense_drop_expired_readings(%s)", (older_than,)).fetchall()
    return [str(r[0]) for r in rows]


def expire_presence(
    conn: psycopg.Connection[Any], older_than: datetime, *, keep_window_s: int = 86_400
) -> int:
    """Delete presence rows (and the ride counts in ``window_rides``) of windows shorter
    than ``keep_window_s`` that ended before ``older_than``; returns how many presence
    rows.

    Presence rows tie a ride to a cell and a window: at fine resolutions and short
    windows that is close to a coarse track, which should not outlive the raw
    tracks (docs/design.md decision 4). Day-long windows stay, so the k-anonymity
    filter keeps working for old data queried by the day; queries of short
    windows over the expired range then find no passing cell-windows.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (e.g. datetime.now(UTC) - ...)")
    params = {"keep": keep_window_s, "older": older_than}
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM window_presence WHERE window_s < %(keep)s"
            " AND window_start + make_interval(secs => window_s) <= %(older)s",
            params,
        )
        # The ride counts of those windows go with them: the public k-check reads the
        # counts (storage.cell_means), and an expired window must not pass it.
        conn.execute(
            "DELETE FROM window_rides WHERE window_s < %(keep)s"
            " AND window_start + make_interval(secs => window_s) <= %(older)s",
            params,
        )
    return cur.rowcount


def ensure_partitions_ahead(
    conn: psycopg.Connection[Any], days_ahead: int = 2, *, now_ms: int | None = None
) -> int:
    """Create today's and the next ``days_ahead`` days' partitions; returns how many were new."""
    today = (now_ms if now_ms is not None else int(time.time() * 1000)) // MS_PER_DAY
    return ensure_partitions(conn, list(range(today, today + days_ahead + 1)))


def raw_partitions(conn: psycopg.Connection[Any]) -> list[str]:
    """Names of the raw-reading partitions (plain) or chunks (TimescaleDB), oldest first."""
    if recorded_backend(conn) is Backend.TIMESCALE:
        rows = conn.execute(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'readings' ORDER BY range_start"
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"
        ).fetchall()
    return [str(r[0]) for r in rows]


#: The hypertables whose retention policy follows the raw-retention setting: the raw
#: tracks, and refused frames, whose bytes may hold positions (docs/privacy.md).
RAW_HORIZON_TABLES = ("readings", "rejected_frames")

_RETENTION_JOBS = """
SELECT job_id, hypertable_name::text, (config ->> 'drop_after')::interval
FROM timescaledb_information.jobs
WHERE proc_name = 'policy_retention' AND hypertable_name = ANY(%s)
"""
_ALL_RETENTION_JOBS = """
SELECT hypertable_name::text, (config ->> 'drop_after')::interval
FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'
"""


def retention_policies(conn: psycopg.Connection[Any]) -> dict[str, timedelta]:
    """TimescaleDB: the retention period (``drop_after``) of every hypertable that has a
    retention policy; the others (the aggregates) are kept. Plain: empty."""
    if recorded_backend(conn) is not Backend.TIMESCALE:
        return {}
    rows = conn.execute(_ALL_RETENTION_JOBS).fetchall()
    return {str(table): keep for table, keep in rows}


def apply_retention(conn: psycopg.Connection[Any], keep: timedelta) -> list[str]:
    """Make TimescaleDB's retention policies keep raw readings and refused frames for
    ``keep`` (the configured ``BIKESENSE_RAW_RETENTION_DAYS``); returns the tables whose
    policy changed. Plain PostgreSQL has no policy to set: :func:`drop_expired` and the
    maintenance round enforce the same period there (and on TimescaleDB too).

    Called by ``bikesense db migrate``, ``bikesense db drop-expired`` and every
    maintenance round, so a changed setting reaches the database without a migration.
    A policy already at ``keep`` is left alone; one that differs is altered in place
    (``alter_job``), so its job id and schedule stay.
    """
    if keep <= timedelta(0):
        raise ValueError(f"retention must be positive (got {keep})")
    if recorded_backend(conn) is not Backend.TIMESCALE:
        return []
    changed = []
    with conn.transaction():
        rows = conn.execute(_RETENTION_JOBS, (list(RAW_HORIZON_TABLES),)).fetchall()
        have = {str(table): (int(job), drop_after) for job, table, drop_after in rows}
        for table in RAW_HORIZON_TABLES:
            if table not in have:
                conn.execute(
                    "SELECT add_retention_policy(%s::regclass, %s::interval)", (table, keep)
                )
                changed.append(table)
            elif have[table][1] != keep:
                conn.execute(
                    "SELECT alter_job(j.job_id, config => jsonb_set(j.config, '{drop_after}',"
                    " to_jsonb(%s::interval::text)))"
                    " FROM timescaledb_information.jobs j WHERE j.job_id = %s",
                    (keep, have[table][0]),
                )
                changed.append(table)
    return changed


def set_raw_retention(conn: psycopg.Connection[Any], keep: timedelta) -> None:
    """:func:`apply_retention`, under its former name."""
    apply_retention(conn, keep)
