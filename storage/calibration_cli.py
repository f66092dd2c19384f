"""``bikesense calibration fit | apply | list``: corrections from co-locations, stored and applied.

The edge of :mod:`storage.calibration_run`, :mod:`storage.corrected_apply` and
:mod:`storage.calibration` (docs/calibration.md, "Storage"): reads the settings and the
database URL, and ends every failure as one line on stderr with exit code 1 (2 when the
database cannot be reached), never a traceback.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from bikesense.cliutil import connect_or_exit, exit_with, settings_or_exit
from bikesense.exceptions import BikesenseError
from storage.calibration_run import data_days, run_fit
from storage.corrected_apply import apply_range
from storage.corrections import list_corrections
from storage.exceptions import QueryError
from storage.migrate import require_migrated
from stream.core.calibration import (
    DEFAULT_MAX_DISTANCE_M,
    DEFAULT_TRAFFIC_MAX_DISTANCE_M,
    PairingConfig,
)
from stream.core.calibration_fit import FitConfig

app = typer.Typer(
    help="Per-kit corrections against reference stations, and the corrected aggregates.",
    no_args_is_help=True,
)
console = Console()

_FROM = typer.Option(
    "--from", help="First UTC day (YYYY-MM-DD); default: the day of the oldest reading."
)
_TO = typer.Option(
    "--to", help="UTC day after the last (YYYY-MM-DD); default: the day after the newest reading."
)


def _fail(exc: Exception) -> NoReturn:
    exit_with(exc, 1)


def _range(
    conn: psycopg.Connection[Any], start: datetime | None, end: datetime | None
) -> tuple[date, date]:
    days = data_days(conn) if start is None or end is None else None
    if (start is None or end is None) and days is None:
        _fail(QueryError("no readings stored: give --from and --to"))
    lo = start.date() if start else days[0] if days else date.min
    hi = end.date() if end else days[1] if days else date.min
    for name, value in (("--from", start), ("--to", end)):
        if value is not None and (value.hour or value.minute or value.second):
            _fail(QueryError(f"{name} must be a day (YYYY-MM-DD), got {value.isoformat()}"))
    if hi <= lo:
        _fail(QueryError(f"--to ({hi}) must be after --from ({lo})"))
    return lo, hi


@app.command("fit")
def fit_command(
    start: Annotated[datetime | None, _FROM] = None,
    end: Annotated[datetime | None, _TO] = None,
    step_days: Annotated[
        int, typer.Option(min=1, max=366, help="Days per valid period of a correction.")
    ] = 7,
    window_days: Annotated[
        float,
        typer.Option(
            min=1,
            max=3660,
            help="Days of co-locations each correction is fitted over, centred on its period.",
        ),
    ] = 30.0,
    min_pairs: Annotated[
        int, typer.Option(min=6, help="Co-locations a kit needs for its own correction.")
    ] = 10,
    max_distance_m: Annotated[
        float, typer.Option(help="Pairing distance at background stations (docs/calibration.md).")
    ] = DEFAULT_MAX_DISTANCE_M,
    traffic_max_distance_m: Annotated[
        float, typer.Option(help="Pairing distance at traffic and industrial stations.")
    ] = DEFAULT_TRAFFIC_MAX_DISTANCE_M,
    apply: Annotated[
        bool, typer.Option(help="Re-compute the corrected aggregates the new corrections touch.")
    ] = True,
) -> None:
    """Pair readings with reference stations, fit per-kit corrections and store both.

    Fitting the same data again stores nothing new and re-computes nothing."""
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            require_migrated(conn)
            lo, hi = _range(conn, start, end)
            report = run_fit(
                conn,
                lo,
                hi,
                resolutions=settings.aggregation.h3_resolutions,
                window_sizes_s=settings.aggregation.window_sizes_s,
                step_days=step_days,
                pairing=PairingConfig(
                    max_distance_m=max_distance_m, traffic_max_distance_m=traffic_max_distance_m
                ),
                fit=FitConfig(window_days=window_days, min_pairs=min_pairs),
                apply=apply,
            )
        except (BikesenseError, psycopg.Error) as exc:
            _fail(exc)
    paired = (
        f"hours from {report.paired_from:%Y-%m-%d %H:%M} re-paired: {report.pairs.inserted} pairs"
        f" ({report.pairs.deleted} replaced)"
        if report.paired_from
        else "no raw readings left to pair: stored pairs used"
    )
    console.print(
        f"{lo} to {hi}: {len(report.periods)} period(s); {paired}; {report.fit.corrections}"
        f" correction(s), {report.fit.new_corrections} new; {report.fit.periods} kit period(s)",
        soft_wrap=True,
        markup=False,
    )
    if report.applied is not None:
        _print_applied(report.applied)


def _print_applied(applied: Any) -> None:
    console.print(
        f"corrected aggregates: {len(applied.recomputed)} day(s) re-computed"
        f" ({applied.rows} cell-windows), {len(applied.unchanged)} unchanged,"
        f" {len(applied.expired)} without raw readings (kept as they were)",
        soft_wrap=True,
        markup=False,
    )


@app.command("apply")
def apply_command(
    start: Annotated[datetime | None, _FROM] = None,
    end: Annotated[datetime | None, _TO] = None,
    force: Annotated[
        bool, typer.Option(help="Re-compute every day, also those whose corrections are unchanged.")
    ] = False,
) -> None:
    """Re-compute the corrected aggregates of the days whose corrections changed (or all
    with --force: after late readings arrived, say)."""
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            require_migrated(conn)
            lo, hi = _range(conn, start, end)
            applied = apply_range(
                conn,
                lo,
                hi,
                resolutions=settings.aggregation.h3_resolutions,
                window_sizes_s=settings.aggregation.window_sizes_s,
                force=force,
            )
        except (BikesenseError, psycopg.Error) as exc:
            _fail(exc)
    _print_applied(applied)


@app.command("list")
def list_command(
    metric: Annotated[
        str | None, typer.Option(help="Only this metric (pm1, pm25, pm10, no2).")
    ] = None,
    replaced: Annotated[
        bool, typer.Option(help="Also corrections no period uses any more.")
    ] = False,
) -> None:
    """The corrections in force, per metric and period: kit, source, gain and offset with
    their standard errors, co-locations, version."""
    if metric is not None and metric not in ("pm1", "pm25", "pm10", "no2"):
        _fail(QueryError(f"--metric must be pm1, pm25, pm10 or no2 (got {metric!r})"))
    with connect_or_exit() as conn:
        try:
            stored = list_corrections(conn, metric=metric, include_replaced=replaced)
        except psycopg.Error as exc:
            _fail(QueryError(f"{exc} (has `bikesense db migrate` run?)"))
    if not stored:
        console.print("no corrections yet: `bikesense calibration fit`")
        return
    table = Table(
        "metric",
        "period (UTC)",
        "kit",
        "source",
        "gain ± se",
        "offset ± se",
        "κ",
        "pairs",
        "version",
        "note",
    )
    for s in stored:
        c = s.correction
        period = (
            f"{s.valid_from:%Y-%m-%d} – {(s.valid_to or s.valid_from) - timedelta(days=1):%Y-%m-%d}"
            if s.valid_from
            else "(fleet)"
        )
        table.add_row(
            c.metric.removesuffix("_ugm3"),
            period,
            "fleet" if c.kit_id is None else str(c.kit_id),
            c.source,
            f"{c.gain:.3f} ± {c.se('gain'):.3f}",
            f"{c.offset:.2f} ± {c.se('offset'):.2f}",
            f"{c.kappa:.2f}" if c.params[2] else "",
            str(c.kit_pairs if c.kit_id is not None else c.n_pairs),
            c.version,
            c.note,
        )
    console.print(table)
