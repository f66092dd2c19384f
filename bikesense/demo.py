"""``bikesense demo``: the whole pipeline on one machine, nothing configured.

Starts the embedded services (or uses the configured ones), applies the
migrations, registers a simulated fleet's kits, starts the embedded runtime
(``bikesense ingest``) and the API (``bikesense api serve``) as child
processes, and lets the fleet ride its rounds in accelerated time, so the map
fills up while you watch. The simulated rounds end at the present moment, so
the map's default range (the last 24 hours) shows them.

``--distributed`` runs the same demo on the distributed runtime: a Kafka broker
beside the other services, ``bikesense ingest --to kafka`` and two faust
workers (``bikesense stream worker``) in place of the embedded runtime.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bikesense.brokerauth import embedded_broker, sync_embedded_broker
from bikesense.exceptions import BikesenseError, ServiceError
from bikesense.services import free_port, local_services
from bikesense.settings import Settings, resolve_database_url, resolve_mqtt_url
from simulators.fleet import Fleet, Run, SimulationConfig
from simulators.kitpublishers import KitPublishers, kit_passwords
from simulators.publisher import MqttPublisher
from simulators.runner import RunStats, pump
from simulators.streetmap import write_town_streets
from storage.cli import master_key_of
from storage.kits import get_kit, register_kit
from storage.migrate import migrate

console = Console()


@dataclass(frozen=True, slots=True)
class DemoOptions:
    bikes: int = 25
    minutes: float = 240.0
    #: Simulated seconds per real second.
    speed: float = 60.0
    seed: int = 1
    port: int = 8000
    #: Stop once the fleet has finished and everything is stored, instead of serving on.
    exit_when_done: bool = False
    #: MQTT → ingest → Kafka → faust workers → PostgreSQL instead of the embedded runtime.
    distributed: bool = False
    workers: int = 2


class Children:
    """The demo's child processes, stopped with SIGTERM (then SIGKILL) however the demo ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, *args: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "bikesense", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return log_path

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ServiceError(
                    f"`bikesense {name}` exited with code {process.returncode}; "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for log in self._logs:
            log.close()


def _wait_http(url: str, children: Children, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children.check()
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            if response.status == 200:
                return
        time.sleep(0.3)
    raise ServiceError(f"the API did not answer on {url} within {timeout_s:.0f} s")


def _register_fleet(database_url: str, settings: Settings, fleet: Fleet) -> int:
    master = master_key_of(settings)
    added = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        for kit_id, secret in fleet.kits:
            if get_kit(conn, kit_id) is None:
                register_kit(conn, master, kit_id, secret=secret)
                added += 1
        # The broker `services up` started lets in only registered kits: now these too.
        sync_embedded_broker(settings.services.state_dir, conn, master)
    return added


def _stored_readings(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        TextColumn("[bold]fleet riding[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[frames]} frames"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        yield progress


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends the demo like Ctrl-C does, so its children are stopped too."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_demo(settings: Settings, options: DemoOptions) -> None:
    _interrupt_on_sigterm()
    services = local_services(settings)
    if options.distributed and settings.services.kafka_url is None:
        console.print("starting Kafka (the first time, Maven downloads it from Maven Central)")
    services.up(
        start_postgres=settings.services.database_url is None,
        start_mosquitto=settings.services.mqtt_url is None,
        start_kafka=options.distributed and settings.services.kafka_url is None,
    )
    database_url = resolve_database_url(settings)
    mqtt_url = resolve_mqtt_url(settings)
    duration_s = options.minutes * 60
    now_ms = time.time_ns() // 1_000_000
    fleet = Fleet(
        SimulationConfig(
            n_bikes=options.bikes,
            duration_s=duration_s,
            start_ms=now_ms - round(duration_s * 1000),
            seed=options.seed,
        )
    )
    added = _register_fleet(database_url, settings, fleet)
    console.print(
        f"database ready at {database_url}; {added} kits registered "
        f"({len(fleet.kits)} in the fleet)"
    )

    port = options.port if _port_is_free(options.port) else free_port()
    children = Children(settings.services.state_dir / "logs")
    try:
        # One ingest process: a plain subscription (docs/ingest.md, broker restarts).
        if options.distributed:
            children.start(
                "ingest",
                "ingest",
                "--to",
                "kafka",
                "--client-id",
                "bikesense-demo-ingest",
                "--share-group",
                "",
            )
            for n in range(1, options.workers + 1):
                children.start(f"worker-{n}", "stream", "worker")
        else:
            children.start(
                "ingest", "ingest", "--client-id", "bikesense-demo-ingest", "--share-group", ""
            )
        # The generated town's streets are the map's offline base map (docs/map.md).
        if "BIKESENSE_BASEMAP_FILE" not in os.environ:
            os.environ["BIKESENSE_BASEMAP_FILE"] = str(
                write_town_streets(fleet.town, settings.services.state_dir / "demo-basemap.geojson")
            )
        children.start("api", "api", "serve", "--port", str(port))
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url + "healthz", children)
        console.print(
            f"\n[bold green]map: {url}[/bold green]   "
            f"(API docs: {url}docs; logs in {children.log_dir})\n"
        )
        run = fleet.run()
        before = _stored_readings(database_url)  # earlier demos' readings stay
        stats = _ride(run, fleet, _fleet_publisher(settings, fleet, mqtt_url), options, children)
        console.print(f"fleet done: {stats.frames} frames published in {stats.wall_s:.0f} s")
        expected = before + _deliverable(run)
        stored = _settle(database_url, children, expected)
        summary = (
            f"{stored - before:,} of the {_deliverable(run):,} readings published in "
            f"this run stored ({stored:,} in all)"
        )
        if options.exit_when_done:
            console.print(
                f"{summary}. Stopping {', '.join(children.processes)}; the services "
                "keep the data (`bikesense services down` stops them)."
            )
            if stored < expected:
                raise ServiceError(
                    f"only {stored - before:,} of the {_deliverable(run):,} "
                    f"readings published were stored; see the logs in "
                    f"{children.log_dir}"
                )
            return
        console.print(f"{summary}. The map stays up at {url} — Ctrl-C to stop.")
        while True:
            children.check()
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        children.stop()


def _deliverable(run: Run) -> int:
    """Readings of this run that a pipeline must store (the truth's count)."""
    return len(run.truth.deliverable()) if run.truth is not None else 0


def _fleet_publisher(
    settings: Settings, fleet: Fleet, mqtt_url: str
) -> KitPublishers | MqttPublisher:
    """Each kit over its own login on the broker ``services up`` started (it refuses anyone
    else); a configured broker's URL as it is, one connection for the fleet."""
    record = (
        embedded_broker(settings.services.state_dir) if settings.services.mqtt_url is None else None
    )
    if record is None:
        return MqttPublisher(mqtt_url, client_id="bikesense-demo-fleet")
    return KitPublishers(record.kits_url, kit_passwords(fleet.kits))


def _ride(
    run: Run,
    fleet: Fleet,
    publisher: KitPublishers | MqttPublisher,
    options: DemoOptions,
    children: Children,
) -> RunStats:
    start_ms = fleet.config.start_ms
    total_ms = fleet.config.end_ms - start_ms
    publisher.connect()
    try:
        with _progress() as progress:
            task = progress.add_task("ride", total=total_ms, frames=0)

            def on_progress(stats: RunStats) -> None:
                children.check()
                progress.update(
                    task, completed=max(stats.last_publish_ms - start_ms, 0), frames=stats.frames
                )

            stats = pump(
                run,
                [publisher],
                speed=options.speed,
                start_ms=start_ms,
                on_progress=on_progress,
                progress_every=50,
            )
            progress.update(task, completed=total_ms, frames=stats.frames)
    finally:
        publisher.close()
    return stats


def _settle(
    database_url: str,
    children: Children,
    expected: int,
    quiet_s: float = 30.0,
    timeout_s: float = 180.0,
) -> int:
    """Wait until ``expected`` readings are stored, or the count has stopped growing for
    ``quiet_s`` (a reading the pipeline refused, which its logs say). Longer than the faust
    workers take to notice and seek back a partition a rebalance stranded (about 10 s)."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children.check()
        count = _stored_readings(database_url)
        if count >= expected:
            return count
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
        time.sleep(0.5)
    return last


def _port_is_free(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_main(settings: Settings, options: DemoOptions) -> None:
    try:
        run_demo(settings, options)
    except BikesenseError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from exc
