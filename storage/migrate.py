"""Versioned schema migrations: numbered ``.sql`` files applied in order, once.

Files live in ``storage/migrations`` and are named ``NNNN_name.sql`` (for every
database) or ``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql`` (two variants
of one version, for plain PostgreSQL or TimescaleDB). The backend is chosen once,
when the first migration is applied: TimescaleDB when the extension is
installed and preloaded, plain PostgreSQL otherwise; later runs keep it.

Every migration runs in its own transaction and is recorded in
``schema_migrations`` with a checksum of its text; a session advisory lock keeps
two processes from migrating at the same time. Re-running applies nothing. An
applied migration whose text changed is refused, except for the comment-only edits
listed in :data:`COMMENT_ONLY_EDITS`.
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

#: Applied migrations whose comments were edited later, and nothing else: (version,
#: checksum of the text as applied) -> checksum of the text now. A database that
#: recorded the old checksum is accepted and its record updated to the new one; any
#: other change to an applied migration is still refused. The comments cited the design
#: document under a file name the repository does not have (it is docs/design.md) and
#: modules since split or moved. The old checksums are those of the files at commit
#: d4db462; tests/storage/test_migrate.py rebuilds each old text from the new one
#: (its OLD_COMMENTS) and checks it.
COMMENT_ONLY_EDITS: dict[tuple[int, str], str] = {
    (1, "941b54b0ca014c245d68b5577331ac6a9f6f74bd7828b73ad2ac4e384541d567"): (
        "70fe03f21ba62e3fec0e4ba96047a132a999af60fe72d5d3c921747ec72991fa"
    ),
    # 0002_readings.timescale.sql; the plain variant is unchanged.
    (2, "6d9f4756f8969dbc155ed9dfb5beccfcdea56e94f07b143ec0d4ff0bcddca207"): (
        "77acf8c8a83835b6ad209b622f58db549b8d7912fe2553f2778da72477f50682"
    ),
    (4, "89959262f23d1e4d93bdf117d7dd788f46b9bc84a4c59eeef2a8e5f0e222a3ec"): (
        "83e696cbf270b7e3704d33c3aebac2e6b97f1e5d4e27234202a9cdd24600d572"
    ),
    (5, "aed34e81f481f9b2ffebf80bc6409b47355d30b93a640483069d78447aeeb65f"): (
        "a711a09a588f0179187fd3276d612a6b48c8a6a52a92447cd731edc38ef1f4a2"
    ),
    (101, "90f5bee757d6d7f29596dcebf303e3a2242054a59d0cd18f99c82e7a11619630"): (
        "35b043f10e9925d75f8e198885c1999ffe9e9b5aa680b2fcf4064d248b94a288"
    ),
    # 0104_growing_tables.timescale.sql; the plain variant is unchanged.
    (104, "a8d26dcebea082844c4121a9665cf6c79d0e881c6b91b8b6e1239bdf60a885fd"): (
        "d85204562c8c18db6dcf59a4806564b05b0d8d87ab68a28f8906f116c8df73bc"
    ),
}

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
    #: Versions whose recorded checksum this run updated after a comment-only edit.
    comments_updated: tuple[int, ...] = ()


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
        comments_updated = []
        for migration in migrations:
            if target is not None and migration.version > target:
                break
            if migration.version in done:
                recorded_checksum = done[migration.version].checksum
                if recorded_checksum != migration.checksum:
                    if not is_comment_only_edit(migration, recorded_checksum):
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; add a new migration instead of editing an "
                            "old one"
                        )
                    _record_new_checksum(conn, migration, recorded_checksum)
                    comments_updated.append(migration.version)
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
        return MigrationReport(
            chosen, tuple(applied), max([*done, *applied], default=0), tuple(comments_updated)
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def is_comment_only_edit(migration: Migration, recorded_checksum: str) -> bool:
    """Whether ``migration`` differs from the text applied (``recorded_checksum``) by one
    of :data:`COMMENT_ONLY_EDITS` exactly: from that old text to this one."""
    return COMMENT_ONLY_EDITS.get((migration.version, recorded_checksum)) == migration.checksum


def _record_new_checksum(
    conn: psycopg.Connection[Any], migration: Migration, recorded_checksum: str
) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE schema_migrations SET checksum = %s WHERE version = %s AND checksum = %s",
            (migration.checksum, migration.version, recorded_checksum),
        )
    log.info(
        "migration %04d_%s: only its comments changed since it was applied; "
        "its checksum is recorded anew",
        migration.version,
        migration.name,
    )


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
