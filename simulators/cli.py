"""``bikesense simulate`` and ``bikesense replay``: a fleet on the command line.

The typer app here is wired into the ``bikesense`` CLI by the lead; it also runs
on its own (``python -m simulators.cli simulate ...``).

By default each kit publishes over its own connection, logged in as that kit
(:mod:`simulators.kitpublishers`), after ``simulate`` has registered the fleet's
kits (:mod:`simulators.registration`): what every broker bikesense starts or
ships requires. ``--connect shared`` sends the whole fleet over one connection,
for a broker without accounts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from simulators.exceptions import LoginRefusedError, SimulatorError
from simulators.faults import FaultPlan
from simulators.fleet import Fleet, Publication, SimulationConfig
from simulators.framefile import FrameFileWriter, read_frame_file
from simulators.kitpublishers import KitPublishers, kit_passwords
from simulators.publisher import DEFAULT_TOPIC_ROOT, MqttPublisher, redacted_url
from simulators.runner import RunStats, Sink, parse_speed, pump

if TYPE_CHECKING:
    from bikesense.settings import Settings

app = typer.Typer(
    help="Simulated sensor kits on delivery bikes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class Connect(StrEnum):
    PER_KIT = "per-kit"
    SHARED = "shared"


_CONNECT_HELP = (
    "per-kit: each kit over its own connection, logged in as that kit (user = kit id, "
    "password from its key), as every broker bikesense starts requires; shared: the whole "
    "fleet over one connection, with the login in --mqtt-url or none, for a broker "
    "without accounts."
)


def _fail(message: str | BaseException) -> NoReturn:
    """One line on stderr and exit code 1: the broker or the registry said no."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)


def _settings() -> Settings:
    # Imported here: the simulator itself does not depend on the service harness.
    from bikesense.exceptions import BikesenseError  # noqa: PLC0415
    from bikesense.settings import load_settings  # noqa: PLC0415

    try:
        return load_settings()
    except BikesenseError as exc:
        _fail(exc)


def _mqtt_url(explicit: str | None, connect: Connect) -> str:
    """--mqtt-url; else BIKESENSE_MQTT_URL; else the broker of `services up`: its kits'
    listener for per-kit logins, its other (ingest's) listener for a shared connection,
    which refuses anonymous clients."""
    if explicit:
        return explicit
    from bikesense.brokerauth import embedded_broker  # noqa: PLC0415
    from bikesense.exceptions import BikesenseError  # noqa: PLC0415
    from bikesense.settings import resolve_mqtt_url  # noqa: PLC0415

    settings = _settings()
    if connect == Connect.PER_KIT and settings.services.mqtt_url is None:
        record = embedded_broker(settings.services.state_dir)
        if record is not None:
            return str(record.kits_url)
    try:
        return resolve_mqtt_url(settings)
    except BikesenseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mqtt-url") from exc


def _read_kits(path: Path) -> tuple[tuple[int, bytes], ...]:
    """``[{"kit_id": 1001, "key": "<64 hex digits>"}, ...]``, as ``--keys-out`` writes."""
    try:
        entries = json.loads(path.read_text())
        return tuple((int(e["kit_id"]), bytes.fromhex(e["key"])) for e in entries)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--kits") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise typer.BadParameter(
            f'{path} is not a JSON list of {{"kit_id": N, "key": "<hex>"}} ({exc!r})',
            param_hint="--kits",
        ) from exc


def _register(kits: list[tuple[int, bytes]]) -> None:
    """The fleet's kits into the registry, and the broker of `services up` told of them."""
    import psycopg  # noqa: PLC0415

    from bikesense.brokerauth import reload_embedded_broker  # noqa: PLC0415
    from bikesense.exceptions import BikesenseError  # noqa: PLC0415
    from bikesense.settings import resolve_database_url  # noqa: PLC0415
    from simulators.registration import register_fleet  # noqa: PLC0415
    from storage.cli import master_key_of  # noqa: PLC0415

    settings = _settings()
    try:
        database_url = resolve_database_url(settings)
        with psycopg.connect(database_url, autocommit=True) as conn:
            done = register_fleet(conn, master_key_of(settings), kits)
            broker_kits = reload_embedded_broker(settings, conn)
    except BikesenseError as exc:
        _fail(f"cannot register the fleet's kits: {exc}")
    except psycopg.Error as exc:
        _fail(f"cannot register the fleet's kits in the database: {exc}".strip())
    line = f"kits registered: {done.added} new, {done.already} already"
    if broker_kits is not None:
        line += f"; the local broker now lets {broker_kits} kits log in"
    console.print(line)


def _start_ms(start: str | None, speed: float | None, duration_s: float) -> int:
    if start:
        try:
            moment = datetime.fromisoformat(start)
        except ValueError as exc:
            raise typer.BadParameter(
                f"not an ISO 8601 time: {start!r}", param_hint="--start"
            ) from exc
        if moment.tzinfo is None:
            raise typer.BadParameter(
                "give a time zone, e.g. 2026-06-15T09:00+02:00", param_hint="--start"
            )
        return round(moment.timestamp() * 1000)
    now_ms = int(time.time()) * 1000
    # Never ahead of the wall clock (the pipeline flags far-future readings): as fast
    # as possible, the run ends now; paced f times faster than real time, it starts
    # early by (1 − 1/f) of its duration and catches up with now as it ends.
    if speed is None:
        return now_ms - round(duration_s * 1000)
    return now_ms - round(max(0.0, 1.0 - 1.0 / speed) * duration_s * 1000)


@app.command()
def simulate(
    bikes: Annotated[
        int | None,
        typer.Option(help="Number of bikes (kits). Default 10, or one per --kits.", min=1),
    ] = None,
    minutes: Annotated[float, typer.Option(help="Simulated minutes.", min=0.1)] = 60.0,
    speed: Annotated[
        str, typer.Option(help="max, realtime, or a factor (10 = ten times real time).")
    ] = "max",
    seed: Annotated[int, typer.Option(help="Same seed, same frames.")] = 0,
    faults: Annotated[
        str,
        typer.Option(
            help="none, typical, or name=value,... (gps_loss, offline_kits, duplicate, "
            "clock_skew_kits, stuck_kits, corrupt, wrong_mac, unknown_kit, reboots_per_hour; "
            "see docs/simulator.md)"
        ),
    ] = "none",
    interval: Annotated[float, typer.Option(help="Seconds between readings (1–10 typical).")] = 5.0,
    batch: Annotated[int, typer.Option(help="Readings per frame while online.")] = 10,
    start: Annotated[
        str | None,
        typer.Option(
            help="Simulated start, ISO 8601 with zone. "
            "Default: now (paced) or now − duration (max)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the publications to this frame file.")
    ] = None,
    mqtt: Annotated[
        bool | None,
        typer.Option(
            "--mqtt/--no-mqtt", help="Publish to MQTT. Default: yes, unless --out is given."
        ),
    ] = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="Broker URL; default BIKESENSE_MQTT_URL, else the broker of `bikesense "
            "services up` (its kits' listener for per-kit connections)."
        ),
    ] = None,
    topic_root: Annotated[str, typer.Option(help="Topic prefix.")] = DEFAULT_TOPIC_ROOT,
    max_inflight: Annotated[
        int, typer.Option(help="QoS 1 messages awaiting PUBACK at most, per connection.")
    ] = 200,
    connect: Annotated[Connect, typer.Option(help=_CONNECT_HELP)] = Connect.PER_KIT,
    register: Annotated[
        bool | None,
        typer.Option(
            "--register/--no-register",
            help="Register the fleet's kits (database and master key as for `bikesense kits "
            "add`) and give the broker of `services up` their logins; with --no-mqtt, only "
            "that. Default: when publishing with per-kit connections.",
        ),
    ] = None,
    kits: Annotated[
        Path | None,
        typer.Option(
            help='Ride as these kits: a JSON list of {"kit_id", "key"} (key in hex: the '
            "secret `kits add` prints), one bike each, instead of kits drawn from the seed."
        ),
    ] = None,
    keys_out: Annotated[
        Path | None,
        typer.Option(
            help="Write the kits' ids and keys (JSON, keys in hex) here, to register them."
        ),
    ] = None,
    truth_out: Annotated[
        Path | None, typer.Option(help="Save the truth record (.npz) here.")
    ] = None,
) -> None:
    """Run a simulated fleet and publish its frames."""
    given_kits = _read_kits(kits) if kits is not None else ()
    if given_kits and bikes is not None and bikes != len(given_kits):
        raise typer.BadParameter(
            f"{kits} holds {len(given_kits)} kits, one per bike; leave --bikes out",
            param_hint="--bikes",
        )
    bikes = len(given_kits) if given_kits else bikes or 10
    try:
        pace = parse_speed(speed)
        plan = FaultPlan.parse(faults)
        config = SimulationConfig(
            n_bikes=bikes,
            kits=given_kits,
            duration_s=minutes * 60.0,
            seed=seed,
            reading_interval_s=interval,
            batch_size=batch,
            faults=plan,
            start_ms=_start_ms(start, pace, minutes * 60.0),
            record_truth=truth_out is not None,
        )
        fleet = Fleet(config)
    except SimulatorError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if keys_out is not None:
        keys_out.write_text(
            json.dumps([{"kit_id": k, "key": key.hex()} for k, key in fleet.kits], indent=1) + "\n"
        )
    use_mqtt = mqtt if mqtt is not None else out is None
    per_kit = use_mqtt and connect == Connect.PER_KIT
    if register or (register is None and per_kit):
        _register(fleet.kits)
    if not use_mqtt and out is None and truth_out is None:
        return  # --no-mqtt alone: nothing to publish or write (registering was the job)
    run = fleet.run()
    console.print(
        f"{bikes} bikes, {minutes:g} min from "
        f"{datetime.fromtimestamp(config.start_ms / 1000).astimezone().isoformat()}, "
        f"seed {seed}, faults {plan.describe()}, speed {speed}"
    )
    stats = _pump(
        run,
        total_s=config.duration_s,
        start_ms=config.start_ms,
        speed=pace,
        out=out,
        mqtt_url=_mqtt_url(mqtt_url, connect) if use_mqtt else None,
        topic_root=topic_root,
        max_inflight=max_inflight,
        logins=kit_passwords(fleet.kits) if per_kit else None,
    )
    console.print(
        f"{'published' if use_mqtt else 'wrote'} {stats.frames} frames and "
        f"{stats.statuses} status messages ({stats.payload_bytes / 1e6:.1f} MB) "
        f"in {stats.wall_s:.1f} s"
    )
    if run.truth is not None and truth_out is not None:
        run.truth.save(truth_out)
        summary = ", ".join(f"{k} {v}" for k, v in run.truth.summary().items() if v)
        console.print(f"truth saved to {truth_out}: {summary}")


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="A frame file written by `simulate --out`.")],
    speed: Annotated[str, typer.Option(help="max, realtime, or a factor.")] = "max",
    mqtt_url: Annotated[
        str | None, typer.Option(help="Broker URL (default as for simulate).")
    ] = None,
    topic_root: Annotated[str, typer.Option(help="Topic prefix.")] = DEFAULT_TOPIC_ROOT,
    max_inflight: Annotated[
        int, typer.Option(help="QoS 1 messages awaiting PUBACK at most, per connection.")
    ] = 200,
    connect: Annotated[Connect, typer.Option(help=_CONNECT_HELP)] = Connect.PER_KIT,
    kits: Annotated[
        Path | None,
        typer.Option(
            help="The kits' ids and keys, to log in as them (the file `simulate --keys-out` "
            "wrote); needed with per-kit connections."
        ),
    ] = None,
) -> None:
    """Publish a frame file again, with its original spacing (scaled by --speed) or at once."""
    logins = None
    if connect == Connect.PER_KIT:
        if kits is None:
            raise typer.BadParameter(
                "per-kit connections log in with the kits' keys: give the file "
                "`simulate --keys-out` wrote, or --connect shared for a broker without accounts",
                param_hint="--kits",
            )
        logins = kit_passwords(_read_kits(kits))
    try:
        pace = parse_speed(speed)
        first = next(iter(read_frame_file(file)), None)
    except (SimulatorError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if first is None:
        console.print("the file holds no publications")
        return
    stats = _pump(
        read_frame_file(file),
        total_s=None,
        start_ms=first.publish_ms,
        speed=pace,
        out=None,
        mqtt_url=_mqtt_url(mqtt_url, connect),
        topic_root=topic_root,
        max_inflight=max_inflight,
        logins=logins,
    )
    console.print(f"replayed {stats.publications} publications in {stats.wall_s:.1f} s")


def _pump(
    publications: Iterable[Publication],
    *,
    total_s: float | None,
    start_ms: int,
    speed: float | None,
    out: Path | None,
    mqtt_url: str | None,
    topic_root: str,
    max_inflight: int,
    logins: dict[int, str] | None,
) -> RunStats:
    """Send ``publications`` to the file and the broker; ``logins`` (kit → MQTT password):
    one connection per kit, logged in as it; None: one connection for all."""
    publisher: KitPublishers | MqttPublisher | None = None
    try:
        if mqtt_url is not None and logins is not None:
            publisher = KitPublishers(
                mqtt_url, logins, topic_root=topic_root, max_inflight=max_inflight
            )
        elif mqtt_url is not None:
            publisher = MqttPublisher(mqtt_url, topic_root=topic_root, max_inflight=max_inflight)
    except SimulatorError as exc:
        _fail(exc)
    if publisher is not None:
        where = "as each kit" if isinstance(publisher, KitPublishers) else "over one connection"
        console.print(f"publishing to {redacted_url(mqtt_url or '')} {where}")
    writer = FrameFileWriter(out) if out is not None else None
    sinks: list[Sink] = [s for s in (writer, publisher) if s is not None]
    try:
        if publisher is not None:
            publisher.connect()
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[sent]} sent"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(
                "simulated time" if total_s else "publications", total=total_s, sent=0
            )

            def update(stats: RunStats) -> None:
                if total_s is None:
                    bar.update(task, completed=stats.publications, sent=stats.publications)
                    return
                # Simulated time reached by what was sent (the generator runs ahead).
                done = (stats.last_publish_ms - start_ms) / 1000.0
                bar.update(task, completed=min(max(done, 0.0), total_s), sent=stats.publications)

            stats = pump(publications, sinks, speed=speed, start_ms=start_ms, on_progress=update)
        if publisher is not None:
            publisher.close()  # waits for the last acknowledgements
    except LoginRefusedError as exc:
        if isinstance(publisher, KitPublishers):
            _fail(
                f"{exc}; register the fleet's kits (--register) and, on a broker that "
                "`bikesense services up` did not start, give it their accounts "
                "(`bikesense kits broker-acl`, then SIGHUP; docs/deployment.md)"
            )
        _fail(f"{exc}; a broker with accounts takes kits one by one (--connect per-kit)")
    except SimulatorError as exc:
        _fail(exc)
    finally:
        if publisher is not None:
            publisher.abort()
        if writer is not None:
            writer.close()
    if isinstance(publisher, KitPublishers) and publisher.skipped:
        console.print(
            f"{publisher.skipped} publications of kits outside the fleet (the "
            "unknown_kit fault) not sent: they have no login"
        )
    return stats


if __name__ == "__main__":
    app()
