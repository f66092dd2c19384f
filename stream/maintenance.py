"""Retention that runs by itself: a background task of the long-running ingest process.

Raw readings are personal data (a track of a mail carrier at work) and expire
after a retention period, 90 days by default (docs/design.md decision 4,
docs/privacy.md); window aggregates stay. The embedded runtime runs
:func:`run_maintenance` at start and then every hour, on either backend:

- on TimescaleDB, set the retention policies of raw readings and refused frames
  to the configured period (``storage.retention.apply_retention``), so a changed
  ``BIKESENSE_RAW_RETENTION_DAYS`` reaches the database at the next round;
- drop the raw-reading partitions (TimescaleDB: chunks) older than the
  retention period: in the foreground, so the period holds on TimescaleDB even
  where its background scheduler does not run;
- delete ride presence of windows shorter than a day that ended before it
  (a fine cell-window-ride row is close to a coarse track);
- delete rejected frames received before it (their bytes may hold positions);
- delete readings held for end-of-ride trimming whose kit has not gone on
  within the ride memory (two days): they were the end of a ride.

Beside it, every 15 s, :func:`keep_statistics` analyzes the tables whose planner
statistics fell behind their growth (``storage.statistics``): autovacuum alone leaves
the API's reads badly planned for a minute or more after a backlog lands; and every
300 s :func:`keep_rollups` rolls up the weeks that are over and those late data changed,
and the days over of the week not over (``storage.rollups``), which keyed roles' long
ranges are read from.

Several ingest processes may run against one database: a session advisory lock
lets one of them do the work and the others skip that round. The lock is
released when the work is done, or by PostgreSQL when the connection drops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from storage.calibration import expire_pairs
from storage.held import expire_held
from storage.rejects import delete_rejects_before
from storage.retention import (
    DEFAULT_RAW_RETENTION,
    apply_retention,
    drop_expired,
    expire_presence,
)
from storage.rollups import refresh_rollups
from storage.statistics import StatisticsKeeper

log = logging.getLogger(__name__)

#: Key of the session advisory lock (an arbitrary constant: "bsmaint" in ASCII).
ADVISORY_LOCK_KEY = 0x62736D61696E74
#: Key of the roll-ups' advisory lock ("bsrollu" in ASCII).
ROLLUP_LOCK_KEY = 0x6273726F6C6C75


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    raw_retention: timedelta = DEFAULT_RAW_RETENTION
    interval_s: float = 3600.0
    #: Wait this long after a failed round (database away) before trying again.
    retry_s: float = 60.0
    #: Readings held for end-of-ride trimming whose kit has not gone on for this long
    #: are deleted (trimmed): the ride memory (stream.core.rides.RideConfig.memory_s).
    held_expiry: timedelta = timedelta(days=2)
    #: How often the planner statistics of tables that grew are brought up to date
    #: (``storage.statistics``); None leaves them to autovacuum.
    statistics_interval_s: float | None = 15.0
    #: How often the weekly roll-ups are brought up to date (``storage.rollups``): the
    #: longest a late reading in a week already rolled up takes to show in a keyed
    #: role's long range. None: never (long ranges then come from the daily windows).
    rollup_interval_s: float | None = 300.0

    def __post_init__(self) -> None:
        if (
            self.raw_retention <= timedelta(0)
            or self.held_expiry <= timedelta(0)
            or self.interval_s <= 0
            or self.retry_s <= 0
            or (self.rollup_interval_s is not None and self.rollup_interval_s <= 0)
        ):
            msg = (
                "maintenance needs a positive retention, interval and retry "
                f"(got {self.raw_retention}, {self.interval_s}, {self.retry_s})"
            )
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    ran: bool  # False when another process held the lock
    dropped: tuple[str, ...] = ()  # raw-reading partitions dropped
    presence_deleted: int = 0
    rejects_deleted: int = 0
    held_deleted: int = 0
    pairs_deleted: int = 0  # calibration pairs of expired hours


def run_maintenance(
    conn: psycopg.Connection[Any], config: MaintenanceConfig, now: datetime | None = None
) -> MaintenanceReport:
    """One round, on an autocommit connection; skipped if another process is at it."""
    now = now or datetime.now(UTC)
    older_than = now - config.raw_retention
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    if not locked or not locked[0]:
        return MaintenanceReport(ran=False)
    try:
        apply_retention(conn, config.raw_retention)
        dropped = tuple(drop_expired(conn, older_than))
        presence = expire_presence(conn, older_than)
        rejects = delete_rejects_before(conn, older_than)
        held = expire_held(conn, now - config.held_expiry)
        pairs = expire_pairs(conn, older_than)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return MaintenanceReport(True, dropped, presence, rejects, held, pairs)


def _round(database_url: str, config: MaintenanceConfig) -> MaintenanceReport:
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=5, application_name="bikesense-maintenance"
    ) as conn:
        return run_maintenance(conn, config)


async def maintain(database_url: str, config: MaintenanceConfig, stop: asyncio.Event) -> None:
    """Run :func:`run_maintenance` now and every ``interval_s`` until ``stop`` is set.

    A failed round (database away, a lock timeout) is logged and retried after
    ``retry_s``; it never stops the runtime that hosts the task.
    """
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(_round, database_url, config)
        except psycopg.Error as exc:
            log.warning("retention round failed (%s); trying again in %.0f s", exc, config.retry_s)
            wait = config.retry_s
        else:
            if report.ran and (
                report.dropped
                or report.presence_deleted
                or report.rejects_deleted
                or report.held_deleted
                or report.pairs_deleted
            ):
                log.info(
                    "retention: dropped %s; deleted %d presence rows, %d rejects, "
                    "%d held ride ends and %d calibration pairs",
                    ", ".join(report.dropped) or "no partitions",
                    report.presence_deleted,
                    report.rejects_deleted,
                    report.held_deleted,
                    report.pairs_deleted,
                )
            wait = config.interval_s
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            continue


def _statistics_round(database_url: str, keeper: StatisticsKeeper) -> list[str]:
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=5, application_name="bikesense-statistics"
    ) as conn:
        return keeper.run(conn)


async def keep_statistics(database_url: str, keeper: StatisticsKeeper, stop: asyncio.Event) -> None:
    """Run ``keeper`` every ``keeper.interval_s`` until ``stop`` is set (planner statistics
    current while ingest grows the tables: ``storage.statistics``). A failed round is
    logged and the next one comes at the interval; it never stops the runtime."""
    while not stop.is_set():
        try:
            analyzed = await asyncio.to_thread(_statistics_round, database_url, keeper)
        except psycopg.Error as exc:
            log.warning(
                "statistics round failed (%s); trying again in %.0f s", exc, keeper.interval_s
            )
        else:
            if analyzed:
                log.debug("analyzed %s", ", ".join(analyzed))
        try:
            await asyncio.wait_for(stop.wait(), timeout=keeper.interval_s)
        except TimeoutError:
            continue


def _rollup_round(database_url: str) -> int:
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=5, application_name="bikesense-rollups"
    ) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (ROLLUP_LOCK_KEY,)).fetchone()
        if not locked or not locked[0]:
            return 0
        try:
            report = refresh_rollups(conn)
            return report.rolled + report.to_date
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ROLLUP_LOCK_KEY,))


async def keep_rollups(database_url: str, interval_s: float, stop: asyncio.Event) -> None:
    """Refresh the weekly roll-ups now and every ``interval_s`` until ``stop`` is set (one
    process at a time, by a session advisory lock). A failed round is logged and the
    next one comes at the interval; it never stops the runtime."""
    while not stop.is_set():
        try:
            rolled = await asyncio.to_thread(_rollup_round, database_url)
        except psycopg.Error as exc:
            log.warning("roll-up round failed (%s); trying again in %.0f s", exc, interval_s)
        else:
            if rolled:
                log.info("rolled up %d weeks (whole or to date)", rolled)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            continue
