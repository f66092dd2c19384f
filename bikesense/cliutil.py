"""What every ``bikesense`` subcommand does at its edge: read settings, connect, fail clearly.

Errors become one red line on stderr and an exit code: 2 for configuration
(nothing ran), 1 for a failure while running.
"""

from __future__ import annotations

from typing import Any, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.markup import escape

from bikesense.exceptions import BikesenseError
from bikesense.settings import Settings, load_settings, resolve_database_url

err_console = Console(stderr=True)


def say_error(exc: Exception) -> None:
    """``error: <message>`` on stderr as one line (no wrapping at the terminal's width,
    and brackets in the message printed as they are, not taken for markup)."""
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)


def exit_with(exc: Exception, code: int = 1) -> NoReturn:
    say_error(exc)
    raise typer.Exit(code) from exc


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except BikesenseError as exc:
        exit_with(exc, 2)


def database_url_or_exit(settings: Settings) -> str:
    try:
        return resolve_database_url(settings)
    except BikesenseError as exc:
        exit_with(exc, 2)


def connect_or_exit(settings: Settings | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection to the configured database."""
    url = database_url_or_exit(settings or settings_or_exit())
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        exit_with(exc, 2)
