"""The decoded-readings array: the one columnar shape every stage passes along.

The wire codec's fast path decodes the readings of a frame straight into a
numpy structured array of :data:`READING_DTYPE`, in physical units. Absent or
failed sensors are NaN (floats) or the stated sentinel, never zero.
"""

from __future__ import annotations

import numpy as np

#: One row per reading. Identity: (kit_id, boot_id, seq, idx).
READING_DTYPE = np.dtype(
    [
        ("kit_id", "<u4"),  # kit identity, as in the topic (decimal there)
        ("boot_id", "<u4"),  # changes at each power-up of the kit
        ("seq", "<u4"),  # frame sequence number within the boot
        ("idx", "<u2"),  # index of the reading within its frame
        ("ts_ms", "<i8"),  # event time, Unix epoch milliseconds, UTC
        ("lat_deg", "<f8"),  # WGS84 latitude (wire: int32 of 1e-7 degree)
        ("lon_deg", "<f8"),  # WGS84 longitude (wire: int32 of 1e-7 degree)
        ("gnss_fix", "u1"),  # 0 no fix, 1 2-D fix, 2 3-D fix
        ("hdop", "<f4"),  # horizontal dilution of precision; NaN if not reported
        ("satellites", "i1"),  # satellites used; -1 if not reported
        ("speed_mps", "<f4"),  # ground speed from GNSS; NaN if not reported
        ("pm1_ugm3", "<f4"),
        ("pm25_ugm3", "<f4"),
        ("pm10_ugm3", "<f4"),
        ("no2_ugm3", "<f4"),
        ("noise_laeq_db", "<f4"),  # A-weighted Leq over the interval, dB(A)
        ("noise_lamax_db", "<f4"),  # A-weighted max over the interval, dB(A)
        ("interval_ms", "<u4"),  # length of the measuring interval this reading covers
        ("temperature_c", "<f4"),
        ("humidity_pct", "<f4"),  # relative humidity, %
        ("status", "<u2"),  # device status bits, see firmware_protocol.StatusBits
    ]
)

#: The columns that make a reading's identity, unique across the system.
IDENTITY_FIELDS = ("kit_id", "boot_id", "seq", "idx")


#: The optional float fields: NaN when the kit sent none (no fix, no sensor). With
#: ``satellites`` (-1) these are every value a reading may lack.
OPTIONAL_FLOAT_FIELDS = (
    "lat_deg",
    "lon_deg",
    "hdop",
    "speed_mps",
    "pm1_ugm3",
    "pm25_ugm3",
    "pm10_ugm3",
    "no2_ugm3",
    "noise_laeq_db",
    "noise_lamax_db",
    "temperature_c",
    "humidity_pct",
)


def empty_readings(n: int = 0) -> np.ndarray:
    """An array of ``n`` readings with every optional value absent (no fix, no position)."""
    out = np.zeros(n, dtype=READING_DTYPE)
    for name in OPTIONAL_FLOAT_FIELDS:
        out[name] = np.nan
    out["satellites"] = -1
    return out
