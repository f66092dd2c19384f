"""``bikesense db ...``: migrations, retention and kit registration from the shell.

The database URL comes from the settings (``BIKESENSE_DATABASE_URL``, else the
cluster ``bikesense services up`` started). The kit master key comes from the
settings' secrets: ``BIKESENSE_KIT_MASTER_KEY`` (``<key id>:<base64>``), else the
file ``BIKESENSE_KIT_MASTER_KEY_FILE``, else ``<state dir>/kit-master.key``,
created on first use for the embedded demo; the researchers' pseudonym key
likewise from ``BIKESENSE_PSEUDONYM_KEY`` (storage/pseudonyms.py). This is the
edge: the storage modules below take both keys as values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bikesense.cliutil import connect_or_exit, exit_with, settings_or_exit
from bikesense.settings import SecretSettings, Settings
from storage.calibration import expire_pairs
from storage.exceptions import StorageError
from storage.keyfiles import key_text
from storage.kits import (
    MasterKey,
)
from storage.migrate import Backend, applied_migrations, load_migrations, migrate, recorded_backend
from storage.pseudonyms import (
    PseudonymKey,
    pseudonym_key,
)
from storage.rejects import delete_rejects_before
from storage.retention import (
    apply_retention,
    drop_expired,
    ensure_partitions_ahead,
    expire_presence,
)

app = typer.Typer(help="Database schema, retention and kit registry.", no_args_is_help=True)
console = Console()


def master_key_of(settings: Settings) -> MasterKey:
    """The kit master key of the settings' secrets (see the module docstring):
    ``BIKESENSE_KIT_MASTER_KEY``, else the file ``..._FILE``, else the state folder's."""
    return MasterKey.from_text(
        key_text(
            SecretSettings.text(settings.secrets.kit_master_key),
            settings.secrets.kit_master_key_file,
            settings.services.state_dir / "kit-master.key",
            lambda: MasterKey.generate().to_text(),
        )
    )


def pseudonym_key_of(settings: Settings) -> PseudonymKey:
    """The researchers' pseudonym key of the settings' secrets: ``BIKESENSE_PSEUDONYM_KEY``,
    else the file ``..._FILE``, else ``<state dir>/pseudonym.key``."""
    return pseudonym_key(
        SecretSettings.text(settings.secrets.pseudonym_key),
        settings.secrets.pseudonym_key_file,
        settings.services.state_dir,
    )


@app.command("migrate")
def migrate_command(
    backend: Annotated[
        Backend | None,
        typer.Option(
            help="Force a backend for a new database (default: TimescaleDB if available)."
        ),
    ] = None,
) -> None:
    """Bring the schema up to date (idempotent; safe to run from several processes).

    On TimescaleDB the retention policies then follow BIKESENSE_RAW_RETENTION_DAYS."""
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            report = migrate(conn, backend=backend)
            apply_retention(conn, timedelta(days=settings.privacy.raw_retention_days))
        except StorageError as exc:
            exit_with(exc)
    done = ", ".join(f"{v:04d}" for v in report.applied) or "nothing (up to date)"
    console.print(
        f"backend {report.backend}; applied {done}; schema version {report.current_version:04d}"
    )
    if report.comments_updated:
        edited = ", ".join(f"{v:04d}" for v in report.comments_updated)
        console.print(f"comments edited since they were applied, checksums updated: {edited}")


@app.command("status")
def status_command() -> None:
    """Show the backend and which migrations are applied or pending."""
    with connect_or_exit() as conn:
        backend = recorded_backend(conn)
        applied = {m.version: m for m in applied_migrations(conn)}
        table = Table("version", "name", "state", "applied at")
        for m in load_migrations(backend or Backend.PLAIN):
            a = applied.get(m.version)
            state = "applied" if a else "[yellow]pending[/yellow]"
            when = a.applied_at.isoformat(timespec="seconds") if a else ""
            table.add_row(f"{m.version:04d}", m.name, state, when)
    console.print(f"backend: {backend or 'not migrated yet'}")
    console.print(table)


@app.command("drop-expired")
def drop_expired_command(
    keep_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep raw readings of this many days (default: BIKESENSE_RAW_RETENTION_DAYS, 90).",
        ),
    ] = None,
    presence: Annotated[
        bool,
        typer.Option(
            "--expire-presence/--keep-presence",
            help="Also delete ride presence of windows shorter than a day (near-tracks).",
        ),
    ] = True,
) -> None:
    """Drop raw-reading partitions older than the retention period, with the refused
    frames, short-window presence and calibration pairs of that age (aggregates stay).

    On TimescaleDB the retention policies are set to the same period first."""
    settings = settings_or_exit()
    keep = timedelta(days=keep_days or settings.privacy.raw_retention_days)
    older_than = datetime.now(UTC) - keep
    with connect_or_exit(settings) as conn:
        apply_retention(conn, keep)
        dropped = drop_expired(conn, older_than)
        expired = expire_presence(conn, older_than) if presence else 0
        rejects = delete_rejects_before(conn, older_than)
        pairs = expire_pairs(conn, older_than)
    names = f": {', '.join(dropped)}" if dropped else ""
    console.print(
        f"dropped {len(dropped)} partition(s){names}; "
        f"deleted {expired} presence row(s) of short windows, {rejects} "
        f"refused frame(s) and {pairs} calibration pair(s)"
    )


@app.command("ensure-partitions")
def ensure_partitions_command(
    days_ahead: Annotated[int, typer.Option(min=0, help="Also create this many days ahead.")] = 2,
) -> None:
    """Create today's and the next days' raw-reading partitions (plain PostgreSQL)."""
    with connect_or_exit() as conn:
        created = ensure_partitions_ahead(conn, days_ahead)
    console.print(f"created {created} partition(s)")
