"""``values=raw|corrected``: which values a figure is made of (docs/calibration.md).

What the cells, time series and tiles routes share about the parameter.
A metric without a reference calibration (noise, temperature, humidity) has no
corrected values, and asking for them is a bad parameter, not an empty answer.
"""

from __future__ import annotations

from typing import Any

import psycopg

from api.errors import BadParameterError
from api.models import Corrections, MetricName, Values
from storage.corrected_windows import CALIBRATED, acorrected_versions
from storage.selection import Selection


def check_values(values: Values, metric: MetricName) -> None:
    if values.corrected and metric.metric not in CALIBRATED:
        names = ", ".join(m.api_name for m in CALIBRATED)
        raise BadParameterError(
            f"{metric.value} has no corrected values: reference stations calibrate {names}",
            parameter="values",
        )


async def corrections_of(
    conn: psycopg.AsyncConnection[Any], values: Values, sel: Selection
) -> Corrections:
    """The values asked for and, for corrected ones, the corrections behind the range."""
    if not values.corrected:
        return Corrections(values=values)
    return Corrections(
        values=values, versions=await acorrected_versions(conn, sel.metric, sel.start, sel.end)
    )
