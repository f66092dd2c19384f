"""Versioned schema migrations: numbered ``.sql`` files applied in order, once.

Files live in ``storage/migrations`` and are named ``NNNN_name.sql`` (for every
database) or ``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql`` (two variants
of one version, for plain PostgreSQL or TimescaleDB). The backend is chosen once,
when the first migration is applied: TimescaleDB when the extension is
installed and preloaded, plain PostgreSQL otherwise; later runs keep it.

Every migration runs in its own transaction and is recorded in
``schema_migrations`` with a checksum of its text; a session advisory lock keeps
two processes from migrating at the same time. Re-running applies nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Any

import psycopg

from storage.exceptions import MigrationError

log = logging.getLogger(__name__)

#: Arbitrary, fixed: the advisory lock key that serialises migrations.
MIGRATION_LOCK_KEY = 7291436011

_FILE_NAME = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>plain|timescale))?\.sql$"
)


class Backend(StrEnum):
    """Where raw readings live: native partitions, or TimescaleDB hypertables."""

    PLAIN = "plain"
    TIMESCALE = "timescale"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    variant: Backend | None  # None: the same for both backends
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    backend: Backend
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate` did."""

    backend: Backend
    applied: tuple[int, ...]  # versions applied by this run, in order
    current_version: int


def load_migrations(backend: Backend) -> list[Migration]:
    """The migrations for ``backend``, in version order."""
    by_version: dict[int, list[Migration]] = {}
    for entry in resources.files("storage.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name!r} is not named NNNN_name[.variant].sql"
            )
        variant = Backend(match["variant"]) if match["variant"] else None
        migration = Migration(int(match["version"]), match["name"], variant, entry.read_text())
        by_version.setdefault(migration.version, []).append(migration)
    chosen = []
    for version in sorted(by_version):
        candidates = by_version[version]
        common = [m for m in candidates if m.variant is None]
        specific = [m for m in candidates if m.variant is backend]
        if len(common) + len(specific) != 1 or (common and len(candidates) > 1):
            names = ", ".join(f"{m.version:04d}_{m.name}.{m.variant or 'sql'}" for m in candidates)
            raise MigrationError(
                f"migration {version:04d} must be one common file or one file per "
                f"backend (found: {names})"
            )
        chosen.append((common or specific)[0])
    return chosen


def detect_backend(conn: psycopg.Connection[Any]) -> Backend:
    """TimescaleDB if it is installed in this database, or available and preloaded."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()
    assert row is not None
    installed, available, preload = row
    if installed:
        return Backend.TIMESCALE
    if available:
        if "timescaledb" in str(preload):
            return Backend.TIMESCALE
        log.warning(
            "the timescaledb extension is available but not in shared_preload_libraries; "
            "using plain PostgreSQL partitioning"
        )
    return Backend.PLAIN


def recorded_backend(conn: psycopg.Connection[Any]) -> Backend | None:
    """The backend the schema was created for, or None if nothing was migrated yet."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(
        "SELECT backend FROM schema_migrations ORDER BY version DESC LIMIT 1"
    ).fetchone()
    return Backend(str(row[0])) if row else None


def applied_migrations(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "SELECT version, name, backend, checksum, applied_at"
        " FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(int(v), str(n), Backend(str(b)), str(c), a) for v, n, b, c, a in rows]


def migrate(
    conn: psycopg.Connection[Any], *, backend: Backend | None = None, target: int | None = None
) -> MigrationReport:
    """Apply every pending migration; idempotent and safe to run from several processes.

    ``backend`` forces a choice for a new database (tests; an operator who wants
    plain partitioning although TimescaleDB is there). On a database that was
    already migrated, a different ``backend`` is an error. ``target`` stops after
    that version (a staged upgrade; tests of a migration's data move).
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("migrate() needs a connection outside any transaction")
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " backend text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        recorded = recorded_backend(conn)
        if recorded is not None and backend is not None and backend is not recorded:
            raise MigrationError(
                f"this database was created for the {recorded} backend; "
                f"it cannot be migrated as {backend}"
            )
        chosen = recorded or backend or detect_backend(conn)
        migrations = load_migrations(chosen)
        done = {m.version: m for m in applied_migrations(conn)}
        known = {m.version for m in migrations}
        unknown = sorted(set(done) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations this code does not know: {unknown}; "
                "is this an older bikesense?"
            )
        newest = max(done, default=0)
        behind = [m for m in migrations if m.version not in done and m.version < newest]
        if behind:
            # Applied now, it would run after newer ones that a new database runs it
            # before: two databases of one release with different histories.
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in behind)
            raise MigrationError(
                f"migration {names} is numbered below {newest:04d}, which "
                "this database already has; number new migrations above "
                "the newest"
            )
        applied = []
        for migration in migrations:
            if target is not None and migration.version > target:
                break
            if migration.version in done:
                if done[migration.version].checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it "
                        "was applied; add a new migration instead of editing an old one"
                    )
                continue
            log.info("applying migration %04d_%s (%s)", migration.version, migration.name, chosen)
            try:
                with conn.transaction():
                    # Our own files, shipped with the package: bytes, not a LiteralString.
                    conn.execute(migration.text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, backend, checksum)"
                        " VALUES (%s, %s, %s, %s)",
                        (migration.version, migration.name, str(chosen), migration.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} ({chosen}) failed: {exc}"
                ) from exc
            applied.append(migration.version)
        return MigrationReport(chosen, tuple(applied), max([*done, *applied], default=0))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def require_migrated(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`MigrationError` saying what to run when the schema is missing or
    behind this code (a process that writes must not start on it: its writes would fail
    one by one, or meet tables without the columns it writes)."""
    done = {m.version for m in applied_migrations(conn)}
    if not done:
        raise MigrationError(
            "the database has no bikesense schema yet: run `bikesense db migrate` first"
        )
    backend = recorded_backend(conn) or detect_backend(conn)
    pending = [m for m in load_migrations(backend) if m.version not in done]
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise MigrationError(
            f"the database lacks migration {names}: run `bikesense db migrate` first"
        )
