"""``bikesense stream ...``: the distributed runtime's worker.

faust is imported only when a worker starts, so ``bikesense --help`` and the
other commands do not pay for it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from bikesense.exceptions import BikesenseError
from bikesense.settings import Settings, load_settings

app = typer.Typer(help="The distributed runtime: faust stream workers over Kafka.",
                  no_args_is_help=True)
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
    store: Annotated[str | None, typer.Option(
        help="Table store: memory:// (rebuilt from the changelog topic at start) or "
             "rocksdb:// (default: rocksdb:// when installed, else memory://).")] = None,
    partitions: Annotated[int, typer.Option(
        min=1, help="Partitions of the bikesense topics; the same in every worker, "
                    "and not to be changed once data flows.")] = 8,
    replicas: Annotated[int, typer.Option(
        min=1, help="Replication factor of the topics the workers create.")] = 1,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a faust stream worker (needs BIKESENSE_KAFKA_URL and BIKESENSE_DATABASE_URL).

    Start as many as there are partitions to share; Kafka rebalances the work.
    """
    settings = _settings()
    if not settings.kafka_url:
        err_console.print("[red]error:[/red] the stream worker needs Kafka: set "
                          "BIKESENSE_KAFKA_URL=kafka://host:9092 (without Kafka, run the "
                          "embedded runtime: `bikesense ingest`)")
        raise typer.Exit(2)
    import faust  # noqa: PLC0415 - see the module docstring

    from stream.distributed import DistributedConfig, create_app, default_store  # noqa: PLC0415

    try:
        stream_app = create_app(
            settings, store=store or default_store(),
            config=DistributedConfig(partitions=partitions, replication_factor=replicas))
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except (BikesenseError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    faust.Worker(stream_app.app, loglevel=log_level.upper()).execute_from_commandline()
