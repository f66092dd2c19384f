"""Sensor models: what a kit reports of the truth around it.

Each kit draws its own calibration errors once (gain and offset of the PM
sensor, offset, drift and temperature coefficient of the NO2 cell, offset of
the sound level meter, of the temperature / humidity sensor). Each reading then
adds noise, the humidity effect on optical PM, wind noise on the microphone,
the warm-up after power-on, and GNSS error with urban jumps.

For every measured value the model also states its *bias* (the expected
measured value minus the truth, all systematic effects together) and its
*sigma* (the standard deviation of the random part), so that the truth record
can give an error bound for any mean of readings.

The values are of the order found in data sheets and field studies, not fitted
to any: Sensirion SPS30 precision ±1 µg/m³ + 10 % below 100 µg/m³ (data sheet,
2020); optical PM reads high above about 75 % RH, growing steeply towards
saturation (the κ-Köhler shape of Crilley et al. 2018, AMT 11, 709, with a
small κ); electrochemical NO2 cells drift and follow temperature; GNSS on a
bike is good to a few metres in the open, worse and jumpy between buildings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.exceptions import SimulatorConfigError
from simulators.truthflags import TruthFlag

#: Relative humidity above which optical PM sensors read high (docs/design.md, domain facts).
HUMID_RH_PCT = 75.0

#: firmware_protocol.StatusBits.WARMING_UP (docs/protocol.md §4.4); the bit value
#: is fixed by the protocol, so it is repeated here rather than imported.
STATUS_WARMING_UP = 1 << 0

PM_FIELDS = ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3")
MEASURED_FIELDS = (
    "pm1_ugm3",
    "pm25_ugm3",
    "pm10_ugm3",
    "no2_ugm3",
    "noise_laeq_db",
    "temperature_c",
    "humidity_pct",
)


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """How good the kits are. Spreads are standard deviations across kits."""

    pm_gain_spread: float = 0.08
    pm_offset_spread_ugm3: float = 0.5
    pm_noise_ugm3: float = 0.5  # random part: this plus pm_noise_relative × value
    pm_noise_relative: float = 0.08
    humidity_kappa: float = 0.1  # hygroscopic growth above HUMID_RH_PCT; 0 turns it off
    pm_warmup_s: float = 30.0  # fan spin-up and first full measurement (SPS30: about 8–30 s)
    no2_offset_spread_ugm3: float = 4.0
    no2_gain_spread: float = 0.1
    no2_drift_spread_ugm3_per_day: float = 0.1
    no2_temperature_coeff_ugm3_per_c: float = 0.4  # mean; spread is half of it
    no2_noise_ugm3: float = 4.0
    no2_warmup_s: float = 120.0
    no2_warmup_offset_ugm3: float = 30.0  # at power-on, decaying with a time constant of warmup/3
    noise_offset_spread_db: float = 0.8
    noise_random_db: float = 1.0
    wind_noise_db_at_5mps: float = 45.0  # 0 turns wind noise off
    temperature_offset_spread_c: float = 0.3
    humidity_offset_spread_pct: float = 2.0
    gnss_sigma_per_hdop_m: float = 1.5  # horizontal error per axis = this × HDOP
    urban_canyon_radius_m: float = 600.0  # around the centre: taller buildings, worse GNSS
    gnss_jump_rate: float = 0.002  # per reading in the open; ten times that in the canyon
    gnss_jump_m: tuple[float, float] = (50.0, 250.0)
    gnss_jump_readings: tuple[int, int] = (1, 5)

    @property
    def warmup_s(self) -> float:
        return max(self.pm_warmup_s, self.no2_warmup_s)

    def validate(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if any(v < 0 for v in values):
                raise SimulatorConfigError(f"sensor option {name} must be ≥ 0 (got {value})")
        if not 0 <= self.gnss_jump_rate * 10 <= 1:
            raise SimulatorConfigError(f"gnss_jump_rate must be 0–0.1 (got {self.gnss_jump_rate})")


@dataclass(frozen=True, slots=True)
class KitCalibration:
    """One kit's own errors, drawn once when the kit is built."""

    pm_gain: float
    pm_offset_ugm3: float
    no2_gain: float
    no2_offset_ugm3: float
    no2_drift_ugm3_per_day: float
    no2_temperature_coeff: float
    deployed_days: float  # age of the NO2 cell at the start of the run
    noise_offset_db: float
    temperature_offset_c: float
    humidity_offset_pct: float
    #: This kit's hygroscopic growth κ; None: the fleet's (SensorSpec.humidity_kappa). Never
    #: drawn here, so every seed's kits stay as they were; simulators.reference sets it.
    humidity_kappa: float | None = None

    def kappa(self, spec: SensorSpec) -> float:
        return spec.humidity_kappa if self.humidity_kappa is None else self.humidity_kappa

    @classmethod
    def draw(cls, spec: SensorSpec, rng: np.random.Generator) -> KitCalibration:
        return cls(
            pm_gain=float(rng.normal(1.0, spec.pm_gain_spread)),
            pm_offset_ugm3=float(rng.normal(0.0, spec.pm_offset_spread_ugm3)),
            no2_gain=float(rng.normal(1.0, spec.no2_gain_spread)),
            no2_offset_ugm3=float(rng.normal(0.0, spec.no2_offset_spread_ugm3)),
            no2_drift_ugm3_per_day=float(rng.normal(0.0, spec.no2_drift_spread_ugm3_per_day)),
            no2_temperature_coeff=float(
                rng.normal(
                    spec.no2_temperature_coeff_ugm3_per_c, spec.no2_temperature_coeff_ugm3_per_c / 2
                )
            ),
            deployed_days=float(rng.uniform(0.0, 60.0)),
            noise_offset_db=float(rng.normal(0.0, spec.noise_offset_spread_db)),
            temperature_offset_c=float(rng.normal(0.0, spec.temperature_offset_spread_c)),
            humidity_offset_pct=float(rng.normal(0.0, spec.humidity_offset_spread_pct)),
        )


@dataclass(frozen=True, slots=True)
class Measured:
    """What the sensors reported, with the model's own account of its errors."""

    values: dict[str, np.ndarray]  # by MEASURED_FIELDS name
    bias: dict[str, np.ndarray]  # expected measured − truth
    sigma: dict[str, np.ndarray]  # standard deviation of the random part
    lamax_db: np.ndarray
    status: np.ndarray  # uint16 StatusBits
    flags: np.ndarray  # uint32 TruthFlag


def humidity_growth(rh_pct: np.ndarray, kappa: float) -> np.ndarray:
    """Factor by which an optical PM sensor over-reads at this relative humidity.

    1 up to HUMID_RH_PCT, then κ·(a/(1−a) − a₀/(1−a₀)) more with a = RH/100
    capped at 0.97 (the reading saturates in fog rather than diverging).
    """
    a = np.clip(np.asarray(rh_pct) / 100.0, 0.0, 0.97)
    a0 = HUMID_RH_PCT / 100.0
    return np.asarray(1.0 + kappa * np.maximum(a / (1 - a) - a0 / (1 - a0), 0.0))


def measure(
    spec: SensorSpec,
    cal: KitCalibration,
    truth: dict[str, np.ndarray],
    *,
    boot_elapsed_s: np.ndarray,
    run_elapsed_s: np.ndarray,
    speed_mps: np.ndarray,
    rng: np.random.Generator,
) -> Measured:
    """Sensor readings of ``truth`` (arrays by field name, one element per reading)."""
    n = len(boot_elapsed_s)
    values: dict[str, np.ndarray] = {}
    bias: dict[str, np.ndarray] = {}
    sigma: dict[str, np.ndarray] = {}
    flags = np.zeros(n, dtype=np.uint32)
    rh_true = truth["humidity_pct"]

    # PM: gain, offset, humidity growth, and a low, noisy start while the fan spins up.
    growth = humidity_growth(rh_true, cal.kappa(spec))
    ramp = (
        np.clip(boot_elapsed_s / spec.pm_warmup_s, 0.2, 1.0) if spec.pm_warmup_s > 0 else np.ones(n)
    )
    for name in PM_FIELDS:
        expected = (truth[name] * cal.pm_gain * growth + cal.pm_offset_ugm3) * ramp
        sd = spec.pm_noise_ugm3 + spec.pm_noise_relative * np.abs(expected)
        values[name] = expected + rng.normal(0.0, 1.0, n) * sd
        bias[name] = expected - truth[name]
        sigma[name] = sd
    # The sensor reports cumulative mass concentrations: PM1 ≤ PM2.5 ≤ PM10, never negative.
    values["pm1_ugm3"] = np.maximum(values["pm1_ugm3"], 0.0)
    values["pm25_ugm3"] = np.maximum(values["pm25_ugm3"], values["pm1_ugm3"])
    values["pm10_ugm3"] = np.maximum(values["pm10_ugm3"], values["pm25_ugm3"])
    flags[rh_true > HUMID_RH_PCT] |= np.uint32(TruthFlag.HUMID)

    # NO2: electrochemical cell with offset, drift over its age, a temperature
    # dependence left uncorrected, and an offset at power-on that decays.
    age_days = cal.deployed_days + run_elapsed_s / 86_400.0
    warm = (
        spec.no2_warmup_offset_ugm3 * np.exp(-boot_elapsed_s / max(spec.no2_warmup_s / 3, 1e-9))
        if spec.no2_warmup_s > 0
        else np.zeros(n)
    )
    expected = (
        truth["no2_ugm3"] * cal.no2_gain
        + cal.no2_offset_ugm3
        + cal.no2_drift_ugm3_per_day * age_days
        + cal.no2_temperature_coeff * (truth["temperature_c"] - 20.0)
        + warm
    )
    # The wire carries no negative concentrations: the firmware clips at zero.
    values["no2_ugm3"] = np.maximum(expected + rng.normal(0.0, spec.no2_noise_ugm3, n), 0.0)
    bias["no2_ugm3"] = expected - truth["no2_ugm3"]
    sigma["no2_ugm3"] = np.full(n, spec.no2_noise_ugm3)

    # Noise: the field plus wind on the microphone (energy sum), a kit offset, and
    # random variation of a short LAeq.
    laeq_true = truth["noise_laeq_db"]
    if spec.wind_noise_db_at_5mps > 0:
        wind = spec.wind_noise_db_at_5mps + 20 * np.log10(np.maximum(speed_mps, 0.5) / 5.0)
        heard = 10 * np.log10(10 ** (laeq_true / 10) + 10 ** (wind / 10))
    else:
        heard = laeq_true
    expected = heard + cal.noise_offset_db
    values["noise_laeq_db"] = expected + rng.normal(0.0, spec.noise_random_db, n)
    bias["noise_laeq_db"] = expected - laeq_true
    sigma["noise_laeq_db"] = np.full(n, spec.noise_random_db)
    lamax = values["noise_laeq_db"] + 3.0 + rng.exponential(3.0, n)

    expected = truth["temperature_c"] + cal.temperature_offset_c
    values["temperature_c"] = expected + rng.normal(0.0, 0.1, n)
    bias["temperature_c"] = np.full(n, cal.temperature_offset_c)
    sigma["temperature_c"] = np.full(n, 0.1)
    expected = rh_true + cal.humidity_offset_pct
    values["humidity_pct"] = np.clip(expected + rng.normal(0.0, 0.5, n), 0.0, 100.0)
    bias["humidity_pct"] = np.full(n, cal.humidity_offset_pct)
    sigma["humidity_pct"] = np.full(n, 0.5)

    status = np.zeros(n, dtype=np.uint16)
    warming = boot_elapsed_s < spec.warmup_s
    status[warming] |= np.uint16(STATUS_WARMING_UP)
    flags[warming] |= np.uint32(TruthFlag.WARMING_UP)
    return Measured(values, bias, sigma, lamax, status, flags)


@dataclass(frozen=True, slots=True)
class GnssReport:
    x_m: np.ndarray  # reported position, local metres (NaN without a fix)
    y_m: np.ndarray
    gnss_fix: np.ndarray  # uint8: 0 none, 1 2-D, 2 3-D
    hdop: np.ndarray  # float32, NaN without a fix
    satellites: np.ndarray  # int8
    speed_mps: np.ndarray  # NaN without a fix
    flags: np.ndarray  # TruthFlag.GPS_JUMP where a jump was applied


def gnss(
    spec: SensorSpec,
    x_m: np.ndarray,
    y_m: np.ndarray,
    speed_mps: np.ndarray,
    rng: np.random.Generator,
) -> GnssReport:
    """GNSS fixes of the true positions: noise scaled by HDOP, and multipath jumps in the canyon."""
    n = len(x_m)
    canyon = np.hypot(x_m, y_m) < spec.urban_canyon_radius_m
    hdop = np.where(canyon, rng.uniform(1.5, 4.0, n), rng.uniform(0.7, 1.4, n))
    sats = np.where(canyon, rng.integers(4, 10, n), rng.integers(8, 15, n)).astype(np.int8)
    sd = spec.gnss_sigma_per_hdop_m * hdop
    x = x_m + rng.normal(0.0, 1.0, n) * sd
    y = y_m + rng.normal(0.0, 1.0, n) * sd
    flags = np.zeros(n, dtype=np.uint32)
    starts = np.flatnonzero(rng.random(n) < np.where(canyon, 10, 1) * spec.gnss_jump_rate)
    for s in starts.tolist():
        length = int(rng.integers(spec.gnss_jump_readings[0], spec.gnss_jump_readings[1] + 1))
        dist = rng.uniform(*spec.gnss_jump_m)
        angle = rng.uniform(0.0, 2 * np.pi)
        x[s : s + length] += dist * np.sin(angle)
        y[s : s + length] += dist * np.cos(angle)
        flags[s : s + length] |= np.uint32(TruthFlag.GPS_JUMP)
    fix = np.where(sats >= 6, 2, 1).astype(np.uint8)
    speed = np.maximum(speed_mps + rng.normal(0.0, 0.2, n), 0.0)
    return GnssReport(x, y, fix, hdop.astype(np.float32), sats, speed, flags)
