"""The columns of a raw-reading export, in their stable order, with their units.

Names carry their units (``pm25_ugm3``, ``noise_laeq_db``); which columns a
caller gets depends on the identities the export shows it
(:func:`api.privacy.export_identities`, docs/privacy.md): admins get the stored
identities (:data:`ADMIN_COLUMNS`), researchers daily pseudonyms instead and
nothing that links a kit's days (:data:`RESEARCHER_COLUMNS`).

Beside ``qa_flags`` two kinds of columns say what it means, in every format:
``qa_flag_names`` and, per metric, ``<metric>_on_map`` (storage/export_columns.py
derives both from the stream's own definitions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage.correction_sql import CORRECTED_METRICS
from storage.export_columns import corrected_column, on_map_column, version_column
from stream.core.partials import Metric


@dataclass(frozen=True, slots=True)
class ExportColumn:
    name: str  # the column in the export, units in the name
    unit: str
    kind: str  # "time", "int", "float32", "float64", "sats", "cell", "name", "flag_names", "bool",
    # "version"
    metric: Metric | None = None  # only when this metric is asked for


def _metric(name: str, metric: Metric) -> tuple[ExportColumn, ...]:
    """A metric's raw column and, for a calibrated one, its corrected value and the
    version of the correction that made it beside it (docs/calibration.md)."""
    raw = ExportColumn(name, "µg/m³", "float32", metric)
    if metric not in CORRECTED_METRICS:
        return (raw,)
    return (
        raw,
        ExportColumn(
            corrected_column(metric),
            "µg/m³, corrected with the kit's calibration; empty where none applies",
            "float64",
            metric,
        ),
        ExportColumn(
            version_column(metric),
            "the version of the correction that made the corrected value",
            "version",
            metric,
        ),
    )


def _measurements() -> tuple[ExportColumn, ...]:
    return (
        ExportColumn("lat_deg", "degree, WGS84", "float64"),
        ExportColumn("lon_deg", "degree, WGS84", "float64"),
        ExportColumn("gnss_fix", "0 none, 1 2-D, 2 3-D", "int"),
        ExportColumn("hdop", "", "float32"),
        ExportColumn("satellites", "count", "sats"),
        ExportColumn("speed_mps", "m/s", "float32"),
        *_metric("pm1_ugm3", Metric.PM1),
        *_metric("pm25_ugm3", Metric.PM25),
        *_metric("pm10_ugm3", Metric.PM10),
        *_metric("no2_ugm3", Metric.NO2),
        ExportColumn("noise_laeq_db", "dB(A)", "float32", Metric.NOISE),
        ExportColumn("noise_lamax_db", "dB(A)", "float32", Metric.NOISE),
        ExportColumn("temperature_c", "°C", "float32", Metric.TEMPERATURE),
        ExportColumn("humidity_pct", "%", "float32", Metric.HUMIDITY),
        ExportColumn("interval_ms", "ms", "int"),
        ExportColumn("status", "device status bits", "int"),
        ExportColumn("qa_flags", "bits of stream.core.qa.QaFlag, 0 = clean", "int"),
        ExportColumn(
            "qa_flag_names",
            "the names of the qa_flags set, lowest bit first, separated by |; empty = clean",
            "flag_names",
        ),
        *(
            ExportColumn(
                on_map_column(m),
                f"true if the map's {m.api_name} aggregates counted this reading",
                "bool",
                m,
            )
            for m in Metric
        ),
        ExportColumn("cell", "H3 index at the finest resolution", "cell"),
    )


#: An admin's export, in its stable order: the readings as stored.
ADMIN_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601, UTC", "time"),
    ExportColumn("kit_id", "", "int"),
    ExportColumn("boot_id", "", "int"),
    ExportColumn("seq", "frame sequence number", "int"),
    ExportColumn("idx", "index in frame", "int"),
    ExportColumn("ride_id", "", "int"),
    *_measurements(),
    ExportColumn("received_at", "ISO 8601, UTC", "time"),
)

#: A researcher's export, in its stable order: kits and rides by daily pseudonym, times to
#: the second, no boot, frame, index or arrival time (storage/pseudonyms.py says why).
RESEARCHER_COLUMNS: tuple[ExportColumn, ...] = (
    ExportColumn("ts", "ISO 8601, UTC, whole seconds", "time"),
    ExportColumn("kit_pseudonym", "the kit's name for this local day", "name"),
    ExportColumn("ride_pseudonym", "the ride's name for this local day", "name"),
    *_measurements(),
)


def export_columns(metrics: Sequence[Metric], *, pseudonymous: bool) -> tuple[ExportColumn, ...]:
    wanted = set(metrics)
    columns = RESEARCHER_COLUMNS if pseudonymous else ADMIN_COLUMNS
    return tuple(c for c in columns if c.metric is None or c.metric in wanted)
