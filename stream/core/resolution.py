"""What the sensors resolve: the decimals each metric is reported in.

The wire carries PM, NO2, noise and relative humidity as integers of 0.1 units and
temperature of 0.01 °C (docs/protocol.md §4.3). Raw readings are stored as float32
(``real``), in which 10.9 is 10.899999618530273; :func:`quantise` takes them back
to the decimal the kit sent before they are summed, compared or shown, so a maximum
is 10.9 and a band is never decided on float32 noise.
"""

from __future__ import annotations

import numpy as np

from stream.core.partials import Metric

#: Decimals of each metric's wire resolution (docs/protocol.md §4.3).
DECIMALS: dict[Metric, int] = {
    Metric.PM1: 1,
    Metric.PM25: 1,
    Metric.PM10: 1,
    Metric.NO2: 1,
    Metric.NOISE: 1,  # LAeq and LAmax, 0.1 dB(A)
    Metric.TEMPERATURE: 2,
    Metric.HUMIDITY: 1,
}


def quantise(metric: Metric, values: np.ndarray) -> np.ndarray:
    """``values`` as float64 at the nearest multiple of the metric's resolution (NaN stays)."""
    return np.round(np.asarray(values, dtype=np.float64), DECIMALS[metric])
