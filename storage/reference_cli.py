"""``bikesense reference import | list``: reference-station data from a file, and what is stored.

The edge of :mod:`storage.reference`: reads the file and the database URL from the
settings, and ends every failure as one line on stderr with exit code 1 (2 when the
file cannot be read or the database reached), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bikesense.cliutil import connect_or_exit, err_console, settings_or_exit
from storage.exceptions import ReferenceDataError, StorageError
from storage.migrate import require_migrated
from storage.reference import set_station_kind, station_summaries, store_reference
from storage.reference_file import Format, HourLabel
from storage.reference_formats import MAX_FILE_BYTES, parse_reference

app = typer.Typer(
    help="Hourly values of official reference stations (Luchtmeetnet, plain CSV).",
    no_args_is_help=True,
)
console = Console()


def _fail(message: str, code: int = 1) -> NoReturn:
    # One line however long (a file name, a JSON path, a server's DETAIL line), whatever
    # the terminal's width.
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    raise typer.Exit(code)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="The file to import.")],
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="luchtmeetnet (the open API's JSON) or csv; default: JSON if the file "
            "starts with { or [, CSV otherwise.",
        ),
    ] = None,
    hour_label: Annotated[
        HourLabel,
        typer.Option(
            help="Which end of its hour Luchtmeetnet's timestamp_measured names "
            "(docs/reference-data.md); CSV always gives hour_start.",
        ),
    ] = HourLabel.END,
) -> None:
    """Import a file of hourly reference values: all of it or, on any error, nothing.

    Importing an hour again replaces its value, so a file can be imported twice."""
    try:
        with file.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        _fail(f"{file}: {exc.strerror or exc}", 2)
    try:
        parsed = parse_reference(data, fmt, hour_label=hour_label)
    except ReferenceDataError as exc:
        _fail(f"{file}: {exc}; nothing was imported")
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            require_migrated(conn)
            report = store_reference(conn, parsed)
        except (StorageError, psycopg.Error) as exc:
            _fail(f"{file}: {exc}; nothing was imported")
    skipped = ", ".join(f"{formula} {n}" for formula, n in parsed.skipped.items())
    console.print(
        f"{file}: {parsed.format}, {report.stations} station(s), {len(parsed.values)} hour(s):"
        f" {report.inserted} new, {report.updated} updated, {report.unchanged} unchanged"
        + (f"; left out (no bikesense metric): {skipped}" if skipped else ""),
        soft_wrap=True,
        markup=False,
    )


@app.command("kind")
def kind_command(
    station: Annotated[str, typer.Argument(help="The station's id, as imported.")],
    kind: Annotated[
        str, typer.Argument(help="traffic, industrial or background ('' for unknown).")
    ],
) -> None:
    """Record a station's EU kind: calibration pairs readings within 25 m of a traffic or
    industrial station, 100 m of others (docs/calibration.md)."""
    with connect_or_exit() as conn:
        try:
            set_station_kind(conn, station, kind)
        except (StorageError, psycopg.Error) as exc:
            _fail(str(exc))
    console.print(f"{station}: {kind or 'kind unknown'}", markup=False)


@app.command("list")
def list_command() -> None:
    """The stations with, per metric, their first and last hour and how many are stored."""
    with connect_or_exit() as conn:
        try:
            summaries = station_summaries(conn)
        except psycopg.Error as exc:
            _fail(f"{exc} (has `bikesense db migrate` run?)")
    if not summaries:
        console.print("no reference stations yet: `bikesense reference import FILE`")
        return
    table = Table(
        "station", "name", "lat", "lon", "metric", "first hour (UTC)", "last hour", "hours", "valid"
    )
    for summary in summaries:
        s = summary.station
        place = (s.station_id, escape(s.name), f"{s.lat_deg:.5f}", f"{s.lon_deg:.5f}")
        if not summary.coverage:
            table.add_row(*place, "", "", "", "0", "0")
        for c in summary.coverage:
            table.add_row(
                *place,
                c.metric.api_name,
                f"{c.first_hour:%Y-%m-%d %H:%M}",
                f"{c.last_hour:%Y-%m-%d %H:%M}",
                str(c.hours),
                str(c.valid_hours),
            )
    console.print(table)
