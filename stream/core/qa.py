"""Quality flags for readings: what each flag means and the thresholds behind them.

Every reading gets a ``qa_flags`` bit set (``0`` = clean). Flags never delete a
reading: raw storage keeps everything, and :mod:`stream.core.policy` decides
which flags keep a reading out of which published metric. The checks that need
a kit's history (speed and jumps, stuck sensors, warm-up) live in
:mod:`stream.core.kitqa`; the per-reading ones are here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from firmware_protocol.frames import StatusBits
from stream.core.exceptions import InvalidConfigError


class QaFlag(IntFlag):
    """Why a reading is doubtful. Stored as ``u4``; bit values are part of the storage contract."""

    # Place and time: the reading cannot be put in a cell or a window it belongs to.
    NO_FIX = 1 << 0  # no GNSS fix, or no coordinates
    POOR_HDOP = 1 << 1  # HDOP above QaConfig.max_hdop, or too few satellites
    INVALID_POSITION = 1 << 2  # coordinates outside WGS84 ranges
    NULL_ISLAND = 1 << 3  # (0, 0): firmware wrote zeros instead of "no fix"
    IMPOSSIBLE_SPEED = 1 << 4  # GNSS ground speed no bike reaches: kit on a van or a bad fix
    POSITION_JUMP = 1 << 5  # too far from the last good position for the time elapsed
    GNSS_FAULT = 1 << 6  # the kit reports its GNSS receiver faulty
    FAR_FUTURE = 1 << 7  # event time ahead of the receive time: broken clock
    TOO_OLD = 1 << 8  # event time older than QaConfig.max_age_s at receipt
    # Device state.
    WARMING_UP = 1 << 9  # kit says so, or within QaConfig.warmup_s of its boot
    NO2_WARMING_UP = 1 << 10  # within QaConfig.no2_warmup_s of boot: cell still settling
    LOW_BATTERY = 1 << 11  # kit reports low battery (annotation)
    # Particulate matter.
    PM_FAULT = 1 << 12
    PM_STUCK = 1 << 13
    PM_OUT_OF_RANGE = 1 << 14
    HUMID_PM = 1 << 15  # RH above QaConfig.humid_pm_rh_pct: optical PM reads high (annotation)
    PM_INCONSISTENT = 1 << 16  # PM1 <= PM2.5 <= PM10 violated (annotation)
    # NO2.
    NO2_FAULT = 1 << 17
    NO2_STUCK = 1 << 18
    NO2_OUT_OF_RANGE = 1 << 19
    # Noise.
    NOISE_FAULT = 1 << 20
    NOISE_STUCK = 1 << 21
    NOISE_OUT_OF_RANGE = 1 << 22
    NOISE_INCONSISTENT = 1 << 23  # LAmax below LAeq (annotation)
    BAD_INTERVAL = 1 << 24  # interval_ms zero or absurd: no time weight for noise energy
    # Temperature and humidity.
    CLIMATE_OUT_OF_RANGE = 1 << 25
    CLIMATE_FAULT = 1 << 26  # kit reports its temperature / humidity sensor faulty
    # Time again: the kit says its clock is free-running, not GNSS or NTP time.
    CLOCK_UNSYNCED = 1 << 27
    # RH at or above QaConfig.fog_pm_rh_pct: droplets, not particles; optical PM is meaningless.
    FOG_PM = 1 << 28

    # Groups, for asking "any sensor stuck?" and the like.
    SENSOR_FAULT = PM_FAULT | NO2_FAULT | NOISE_FAULT | GNSS_FAULT | CLIMATE_FAULT
    STUCK_SENSOR = PM_STUCK | NO2_STUCK | NOISE_STUCK
    OUT_OF_RANGE = PM_OUT_OF_RANGE | NO2_OUT_OF_RANGE | NOISE_OUT_OF_RANGE | CLIMATE_OUT_OF_RANGE
    ALL = (1 << 29) - 1


#: The flags of one bit each, lowest bit first: the groups above are not flags of their own.
SINGLE_FLAGS: tuple[QaFlag, ...] = tuple(
    sorted((f for f in QaFlag if f.name and f.value.bit_count() == 1), key=int)
)


def flag_names(flags: int) -> list[str]:
    """Names of the single flags set in ``flags``, lowest bit first (for exports and logs)."""
    return [f.name for f in SINGLE_FLAGS if f.name and flags & f.value]


@dataclass(frozen=True, slots=True)
class QaConfig:
    """Thresholds of the QA checks. Defaults are for postal bikes in a Dutch city."""

    # Pedal-assisted bikes are cut off at 25 km/h (6.9 m/s, EU Regulation 168/2013,
    # art. 2(2)(h)); downhill or a fast rider stays well below 15 m/s (54 km/h).
    # Anything faster is a bike on a van or a GNSS error.
    max_speed_mps: float = 15.0
    # Consumer GNSS is good to a few metres in the open but errs by tens of metres
    # between tall buildings (docs/design.md); a jump is flagged only beyond this slack.
    jump_slack_m: float = 30.0
    # If every position for this long looks like a jump, the anchor was the bad one
    # (e.g. the first fix after a cold start): trust the new track again.
    jump_reanchor_s: float = 30.0
    # HDOP on the usual rating scale: 1–2 excellent, 2–5 good, 5–10 moderate
    # (Wikipedia, "Dilution of precision (navigation)"). At 5, a few metres of range
    # error become tens of metres of position error, near a res-10 cell's edge (66 m).
    max_hdop: float = 5.0
    # A 3-D fix needs four satellites; used when the kit reports no HDOP.
    min_satellites: int = 4
    # Firmware that writes 0/0 without a fix: within ~100 m of (0, 0).
    null_island_deg: float = 0.001
    # Kit clocks come from GNSS; same limits as ingest's admission rules.
    max_future_s: float = 5 * 60.0
    max_age_s: float = 30 * 24 * 3600.0
    # Plantower PMS5003 manual: stable data "at least 30 seconds after the sensor
    # wakeup"; Sensirion SPS30 datasheet: start-up under 8 s. Twice the longer one.
    warmup_s: float = 60.0
    # Electrochemical NO2 cells need their zero current to settle after power-on
    # (minutes, per manufacturers' application notes); conservative default.
    no2_warmup_s: float = 600.0
    # A sensor is stuck when its value has not changed at all for this long and this
    # many readings. PMS5003 reports whole µg/m³, so clean air legitimately repeats a
    # value for minutes; a dB(A) module on a moving bike never repeats for 2 minutes.
    pm_stuck_s: float = 900.0
    no2_stuck_s: float = 600.0
    noise_stuck_s: float = 120.0
    stuck_min_readings: int = 10
    # Optical PM sensors over-read from hygroscopic growth above about 75 % RH
    # (docs/design.md; Jayaratne et al., Atmos. Meas. Tech. 11, 4883–4890, 2018).
    humid_pm_rh_pct: float = 75.0
    #: Near saturation optical counters see fog droplets (Jayaratne et al. 2018 report
    #: growing over-reads from ~75 % and extreme ones near 100 %): excluded from the map.
    fog_pm_rh_pct: float = 95.0
    # Measurement ranges: SPS30 and PMS5003 both 0–1000 µg/m³ (datasheets).
    pm_range_ugm3: tuple[float, float] = (0.0, 1000.0)
    # Electrochemical NO2 reads a little below zero in clean air after baseline
    # correction; cutting at 0 would bias means, so only clearly broken values go.
    no2_range_ugm3: tuple[float, float] = (-40.0, 2000.0)
    # Class 2 sound-level modules cover roughly 30–130 dB(A).
    noise_range_db: tuple[float, float] = (25.0, 140.0)
    # SHT3x / BME280 operating ranges.
    temperature_range_c: tuple[float, float] = (-40.0, 85.0)
    humidity_range_pct: tuple[float, float] = (0.0, 100.0)
    # PM1 <= PM2.5 <= PM10 by definition; allow for rounding of whole-µg/m³ outputs.
    pm_order_slack_ugm3: float = 1.0
    # LAmax >= LAeq by definition; allow for rounding to 0.1 dB on both.
    lamax_slack_db: float = 0.5
    # A reading's interval: more than an hour is not a mobile reading.
    max_interval_s: float = 3600.0
    # History older than this (a pause as long as a ride gap) informs no check.
    context_gap_s: float = 20 * 60.0

    def __post_init__(self) -> None:
        positive = {
            "max_speed_mps": self.max_speed_mps,
            "max_hdop": self.max_hdop,
            "jump_reanchor_s": self.jump_reanchor_s,
            "pm_stuck_s": self.pm_stuck_s,
            "no2_stuck_s": self.no2_stuck_s,
            "noise_stuck_s": self.noise_stuck_s,
            "max_interval_s": self.max_interval_s,
            "context_gap_s": self.context_gap_s,
        }
        for name, value in positive.items():
            if not value > 0:
                msg = f"QaConfig.{name} must be positive (got {value!r})"
                raise InvalidConfigError(msg)
        for name in (
            "pm_range_ugm3",
            "no2_range_ugm3",
            "noise_range_db",
            "temperature_range_c",
            "humidity_range_pct",
        ):
            low, high = getattr(self, name)
            if not low < high:
                msg = f"QaConfig.{name} must be (low, high) with low < high (got {(low, high)!r})"
                raise InvalidConfigError(msg)


#: Device status bits (firmware_protocol.StatusBits) and the flag each becomes.
_STATUS_FLAGS: tuple[tuple[StatusBits, QaFlag], ...] = (
    (StatusBits.WARMING_UP, QaFlag.WARMING_UP),
    (StatusBits.PM_FAULT, QaFlag.PM_FAULT),
    (StatusBits.NO2_FAULT, QaFlag.NO2_FAULT),
    (StatusBits.NOISE_FAULT, QaFlag.NOISE_FAULT),
    (StatusBits.GNSS_FAULT, QaFlag.GNSS_FAULT),
    (StatusBits.LOW_BATTERY, QaFlag.LOW_BATTERY),
    (StatusBits.TH_FAULT, QaFlag.CLIMATE_FAULT),
    (StatusBits.CLOCK_UNSYNCED, QaFlag.CLOCK_UNSYNCED),
)


def _outside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """True where a value is present and outside [low, high]; NaN is "absent", not bad."""
    with np.errstate(invalid="ignore"):
        return (values < bounds[0]) | (values > bounds[1])


def reading_flags(enriched: np.ndarray, config: QaConfig) -> np.ndarray:
    """Flags that each reading earns on its own, without the kit's history (``uint32``)."""
    n = len(enriched)
    flags = np.zeros(n, dtype=np.uint32)

    def mark(mask: np.ndarray, flag: QaFlag) -> None:
        flags[mask] |= np.uint32(int(flag))

    status = enriched["status"].astype(np.uint32)
    for bit, flag in _STATUS_FLAGS:
        mark((status & np.uint32(int(bit))) != 0, flag)

    lat = enriched["lat_deg"]
    lon = enriched["lon_deg"]
    finite = np.isfinite(lat) & np.isfinite(lon)
    mark((enriched["gnss_fix"] == 0) | ~finite, QaFlag.NO_FIX)
    with np.errstate(invalid="ignore"):
        mark(finite & ((np.abs(lat) > 90) | (np.abs(lon) > 180)), QaFlag.INVALID_POSITION)
        island = config.null_island_deg
        mark(finite & (np.abs(lat) < island) & (np.abs(lon) < island), QaFlag.NULL_ISLAND)
        hdop = enriched["hdop"]
        sats = enriched["satellites"]
        poor = (hdop > config.max_hdop) | (
            np.isnan(hdop) & (sats >= 0) & (sats < config.min_satellites)
        )
        mark(poor, QaFlag.POOR_HDOP)
        mark(enriched["speed_mps"] > config.max_speed_mps, QaFlag.IMPOSSIBLE_SPEED)

    ts = enriched["ts_ms"]
    received = enriched["received_ms"]
    mark(ts > received + int(config.max_future_s * 1000), QaFlag.FAR_FUTURE)
    mark(ts < received - int(config.max_age_s * 1000), QaFlag.TOO_OLD)

    pm = [enriched[c].astype(np.float64) for c in ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3")]
    mark(
        np.logical_or.reduce([_outside(v, config.pm_range_ugm3) for v in pm]),
        QaFlag.PM_OUT_OF_RANGE,
    )
    with np.errstate(invalid="ignore"):
        slack = config.pm_order_slack_ugm3
        mark(
            (pm[0] > pm[1] + slack) | (pm[1] > pm[2] + slack) | (pm[0] > pm[2] + slack),
            QaFlag.PM_INCONSISTENT,
        )
        any_pm = ~np.isnan(pm[0]) | ~np.isnan(pm[1]) | ~np.isnan(pm[2])
        mark(any_pm & (enriched["humidity_pct"] > config.humid_pm_rh_pct), QaFlag.HUMID_PM)
        mark(any_pm & (enriched["humidity_pct"] >= config.fog_pm_rh_pct), QaFlag.FOG_PM)
    mark(_outside(enriched["no2_ugm3"], config.no2_range_ugm3), QaFlag.NO2_OUT_OF_RANGE)

    laeq = enriched["noise_laeq_db"]
    lamax = enriched["noise_lamax_db"]
    mark(
        _outside(laeq, config.noise_range_db) | _outside(lamax, config.noise_range_db),
        QaFlag.NOISE_OUT_OF_RANGE,
    )
    with np.errstate(invalid="ignore"):
        mark(lamax < laeq - config.lamax_slack_db, QaFlag.NOISE_INCONSISTENT)
    interval = enriched["interval_ms"]
    mark(
        ~np.isnan(laeq) & ((interval == 0) | (interval > config.max_interval_s * 1000)),
        QaFlag.BAD_INTERVAL,
    )

    mark(
        _outside(enriched["temperature_c"], config.temperature_range_c)
        | _outside(enriched["humidity_pct"], config.humidity_range_pct),
        QaFlag.CLIMATE_OUT_OF_RANGE,
    )
    return flags
