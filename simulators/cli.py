"""``bikesense simulate`` and ``bikesense replay``: a fleet on the command line.

The typer app here is wired into the ``bikesense`` CLI by the lead; it also runs
on its own (``python -m simulators.cli simulate ...``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from simulators.exceptions import SimulatorError
from simulators.faults import FaultPlan
from simulators.fleet import Fleet, Publication, SimulationConfig
from simulators.framefile import FrameFileWriter, read_frame_file
from simulators.publisher import DEFAULT_TOPIC_ROOT, MqttPublisher
from simulators.runner import RunStats, Sink, parse_speed, pump

app = typer.Typer(
    help="Simulated sensor kits on delivery bikes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _mqtt_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    # Imported here: the simulator itself does not depend on the service harness.
    from bikesense.exceptions import BikesenseError  # noqa: PLC0415
    from bikesense.settings import load_settings, resolve_mqtt_url  # noqa: PLC0415

    try:
        return resolve_mqtt_url(load_settings())
    except BikesenseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mqtt-url") from exc


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
    bikes: Annotated[int, typer.Option(help="Number of bikes (kits).", min=1)] = 10,
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
            help="Broker URL; default BIKESENSE_MQTT_URL or the broker of `bikesense services up`."
        ),
    ] = None,
    topic_root: Annotated[str, typer.Option(help="Topic prefix.")] = DEFAULT_TOPIC_ROOT,
    max_inflight: Annotated[
        int, typer.Option(help="QoS 1 messages awaiting PUBACK at most.")
    ] = 200,
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
    try:
        pace = parse_speed(speed)
        plan = FaultPlan.parse(faults)
        config = SimulationConfig(
            n_bikes=bikes,
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
        mqtt_url=_mqtt_url(mqtt_url) if use_mqtt else None,
        topic_root=topic_root,
        max_inflight=max_inflight,
    )
    console.print(
        f"published {stats.frames} frames and {stats.statuses} status messages "
        f"({stats.payload_bytes / 1e6:.1f} MB) in {stats.wall_s:.1f} s"
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
        int, typer.Option(help="QoS 1 messages awaiting PUBACK at most.")
    ] = 200,
) -> None:
    """Publish a frame file again, with its original spacing (scaled by --speed) or at once."""
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
        mqtt_url=_mqtt_url(mqtt_url),
        topic_root=topic_root,
        max_inflight=max_inflight,
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
) -> RunStats:
    writer = FrameFileWriter(out) if out is not None else None
    publisher = (
        MqttPublisher(mqtt_url, topic_root=topic_root, max_inflight=max_inflight)
        if mqtt_url is not None
        else None
    )
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
    except SimulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        if publisher is not None:
            publisher.abort()
        if writer is not None:
            writer.close()
    return stats


if __name__ == "__main__":
    app()
