"""``bikesense api serve`` and ``bikesense keys ...``: typer apps the main CLI mounts.

app = typer.Typer(...)       # mounted as ``bikesense api``: serve, keys create | list | revoke
keys_app = typer.Typer(...)  # also mounted as ``bikesense keys``
"""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from api.keys import create_key, list_keys, revoke_key
from api.roles import KEY_ROLES, Role
from bikesense.exceptions import BikesenseError
from bikesense.settings import Settings, load_settings, resolve_database_url

app = typer.Typer(
    help="The HTTP API and its keys.", no_args_is_help=True, pretty_exceptions_enable=False
)
keys_app = typer.Typer(help="API keys: officer, researcher and admin access.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except BikesenseError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _database_url(settings: Settings) -> str:
    try:
        return resolve_database_url(settings)
    except BikesenseError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: BIKESENSE_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: BIKESENSE_API_PORT")] = None,
) -> None:
    """Serve the API and the map page with uvicorn."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from api.app import create_app  # noqa: PLC0415
    from api.memory import limit_malloc_arenas  # noqa: PLC0415

    # Before the server starts any thread: memory then follows the work, not the
    # number of worker threads that ever held an export (api/memory.py).
    limit_malloc_arenas()
    settings = _settings()
    url = _database_url(settings)
    try:
        application = create_app(settings, database_url=url)
    except BikesenseError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    # Live (SSE) streams never end on their own: without a bound, a shutdown would wait
    # for every open map page to go away.
    uvicorn.run(
        application,
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="officer, researcher or admin")],
    label: Annotated[str, typer.Option(help="who or what the key is for")] = "",
) -> None:
    """Create a key and print it once: only its hash is stored."""
    if role not in {r.value for r in KEY_ROLES}:
        err_console.print(
            f"[red]error:[/red] --role must be one of "
            f"{', '.join(r.value for r in KEY_ROLES)} (got {role!r})"
        )
        raise typer.Exit(2)
    with psycopg.connect(_database_url(_settings()), autocommit=True) as conn:
        key = create_key(conn, Role(role), label)
    err_console.print(
        f"created {key.role.value} key {key.key_id}; store it now, it cannot be shown again:"
    )
    typer.echo(key.token)


@keys_app.command("list")
def keys_list() -> None:
    """Keys, their roles and state (never the keys themselves)."""
    with psycopg.connect(_database_url(_settings()), autocommit=True) as conn:
        records = list_keys(conn)
    table = Table("key id", "role", "label", "created", "last used", "revoked")
    for r in records:
        table.add_row(
            r.key_id,
            r.role,
            r.label,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id from `keys list`")]) -> None:
    """Revoke a key; requests with it are refused from then on."""
    with psycopg.connect(_database_url(_settings()), autocommit=True) as conn:
        revoked = revoke_key(conn, key_id)
    if not revoked:
        err_console.print(f"[red]error:[/red] no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")
