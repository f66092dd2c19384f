"""``bikesense stream ...``: the distributed runtime's worker.

faust is imported only when a worker starts, so ``bikesense --help`` and the
other commands do not pay for it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from bikesense.exceptions import BikesenseError, ConfigurationError
from bikesense.settings import Settings, load_settings

app = typer.Typer(
    help="The distributed runtime: faust stream workers over Kafka.", no_args_is_help=True
)
err_console = Console(stderr=True)


@app.callback()
def stream_group() -> None:
    """The distributed runtime: faust stream workers over Kafka (docs/deployment.md)."""


def _settings() -> Settings:
    try:
        return load_settings()
    except BikesenseError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command("worker")
def worker_command(
    store: Annotated[
        str | None,
        typer.Option(
            help="Table store: memory:// (rebuilt from the changelog topic at start) or "
            "rocksdb:// (default: rocksdb:// when installed, else memory://)."
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions of the bikesense topics (default: BIKESENSE_KAFKA_PARTITIONS, "
            "8); the same in every worker and in ingest, and not to be changed once "
            "data flows.",
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option(min=1, help="Replication factor of the topics the workers create.")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a faust stream worker (Kafka: BIKESENSE_KAFKA_URL or `services up --kafka`;
    database: BIKESENSE_DATABASE_URL or `services up`).

    Start as many as there are partitions to share; Kafka rebalances the work.
    """
    settings = _settings()
    import faust  # noqa: PLC0415 - see the module docstring

    from stream.distributed import (  # noqa: PLC0415
        DistributedConfig,
        create_app,
        default_store,
        ensure_app_topics,
    )

    try:
        config = DistributedConfig.from_settings(
            settings,
            replication_factor=replicas,
            **({"partitions": partitions} if partitions is not None else {}),
        )
        stream_app = create_app(settings, store=store or default_store(), config=config)
        settings.services.state_dir.mkdir(parents=True, exist_ok=True)
        # Before faust starts: it would take a topic with another partition count as it is.
        asyncio.run(ensure_app_topics(stream_app))
    except (BikesenseError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1) from exc
    faust.Worker(stream_app.app, loglevel=log_level.upper()).execute_from_commandline()
