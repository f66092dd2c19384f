"""The ``bikesense`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

import api.cli as api_cli
import ingest.cli as ingest_cli
import simulators.cli as simulators_cli
import storage.cli as storage_cli
import stream.cli as stream_cli
from bikesense.cliutil import exit_with, say_error, settings_or_exit
from bikesense.exceptions import BikesenseError
from bikesense.services import local_services
from bikesense.settings import Settings
from storage import calibration_cli, reference_cli


class _Bikesense(typer.Typer):
    """The command line's one edge for errors: whatever a command lets through that is a
    :class:`BikesenseError` (the root of every package's errors) ends as one line on
    stderr and exit code 1, never a traceback. Commands translate the errors they
    expect themselves, with their own exit codes (``bikesense.cliutil``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except BikesenseError as exc:
            say_error(exc)
            raise SystemExit(1) from None


app = _Bikesense(
    name="bikesense",
    help="Mobile environmental sensing on delivery bikes: kits → MQTT → stream → database → map.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Start, inspect and stop local PostgreSQL, Mosquitto, Kafka.", no_args_is_help=True
)
app.add_typer(services_app, name="services")
app.add_typer(storage_cli.app, name="db")
app.add_typer(ingest_cli.kits_app, name="kits")
app.command("ingest")(ingest_cli.ingest_command)
app.add_typer(simulators_cli.app, name="sim")
app.command("simulate")(simulators_cli.simulate)
app.add_typer(stream_cli.app, name="stream")
app.add_typer(api_cli.app, name="api")
app.add_typer(api_cli.keys_app, name="keys")
app.add_typer(reference_cli.app, name="reference")
app.add_typer(calibration_cli.app, name="calibration")

console = Console()


@app.command("demo")
def demo(
    bikes: Annotated[int, typer.Option(min=1, max=500, help="Simulated bikes.")] = 25,
    minutes: Annotated[
        float, typer.Option(min=5, max=24 * 60, help="Simulated minutes of rounds, ending now.")
    ] = 240,
    speed: Annotated[float, typer.Option(min=1, help="Simulated seconds per real second.")] = 60,
    seed: Annotated[int, typer.Option(help="Same seed, same fleet.")] = 1,
    port: Annotated[int, typer.Option(help="API port (another free one if taken).")] = 8000,
    exit_when_done: Annotated[
        bool,
        typer.Option(help="Stop once the fleet is done and stored, instead of serving the map on."),
    ] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            help="Run the distributed runtime: a local Kafka broker, `ingest --to kafka` and "
            "faust workers instead of the embedded runtime (needs Java 17 and Maven)."
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=8, help="faust workers with --distributed.")
    ] = 2,
) -> None:
    """The main job: services, a simulated fleet, the embedded stream, the API and the map."""
    from bikesense.demo import DemoOptions, demo_main  # noqa: PLC0415

    demo_main(
        settings_or_exit(),
        DemoOptions(
            bikes=bikes,
            minutes=minutes,
            speed=speed,
            seed=seed,
            port=port,
            exit_when_done=exit_when_done,
            distributed=distributed,
            workers=workers,
        ),
    )


@services_app.command("up")
def services_up(
    postgres: Annotated[
        bool, typer.Option(help="Start PostgreSQL unless BIKESENSE_DATABASE_URL is set.")
    ] = True,
    mosquitto: Annotated[
        bool, typer.Option(help="Start Mosquitto unless BIKESENSE_MQTT_URL is set.")
    ] = True,
    kafka: Annotated[
        bool,
        typer.Option(
            help="Also start a Kafka broker for the distributed runtime, unless "
            "BIKESENSE_KAFKA_URL is set (needs Java 17 and Maven; the first start "
            "downloads Kafka from Maven Central)."
        ),
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            help="Stay in the foreground and start any of them again, on the same ports, when "
            "it dies (a crash, kill -9); Ctrl-C stops watching and leaves them running "
            '(docs/deployment.md, "When a service crashes").'
        ),
    ] = False,
) -> None:
    """Start PostgreSQL and Mosquitto (and Kafka) on free loopback ports, skipping those
    configured by URL; a service that ran before comes back on its recorded ports."""
    settings = settings_or_exit()
    services = local_services(settings)
    wanted = {
        "start_postgres": postgres and settings.services.database_url is None,
        "start_mosquitto": mosquitto and settings.services.mqtt_url is None,
        "start_kafka": kafka and settings.services.kafka_url is None,
    }
    try:
        services.up(**wanted)
    except BikesenseError as exc:
        exit_with(exc)
    _print_status(settings)
    if watch:
        import contextlib  # noqa: PLC0415
        import signal  # noqa: PLC0415
        import threading  # noqa: PLC0415

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print("watching; Ctrl-C to stop watching (the services keep running)")
        with contextlib.suppress(KeyboardInterrupt):
            services.watch(
                stop,
                restarted=lambda r: console.print(
                    f"{r.name} had stopped: started again on {r.url} (pid {r.pid})"
                ),
                **wanted,
            )


@services_app.command("status")
def services_status() -> None:
    """Say what runs where."""
    _print_status(settings_or_exit())


@services_app.command("down")
def services_down() -> None:
    """Stop the services that `services up` started."""
    settings = settings_or_exit()
    try:
        stopped = local_services(settings).down()
    except BikesenseError as exc:
        exit_with(exc)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def _print_status(settings: Settings) -> None:
    lines = []
    if settings.services.database_url:
        lines.append(f"postgres   configured  {settings.services.database_url}")
    if settings.services.mqtt_url:
        lines.append(f"mosquitto  configured  {settings.services.mqtt_url}")
    if settings.services.kafka_url:
        lines.append(f"kafka      configured  {settings.services.kafka_url}")
    for name, (record, alive) in local_services(settings).status().items():
        state = "[green]running[/green]" if alive else "[red]stopped[/red]"
        lines.append(f"{name:<10} {state}  {record.url}  pid {record.pid}  log {record.log_file}")
    if not lines:
        console.print("nothing is running; start them with `bikesense services up`")
        return
    for line in lines:
        console.print(line, soft_wrap=True)
