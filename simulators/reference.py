"""Reference stations and calibration campaigns: the ground truth a calibration is proved on.

A reference station stands at a fixed place in the simulated town and reports,
per clock hour and metric, the hourly mean of the truth field there (sampled
once a minute): an accurate instrument, as a Luchtmeetnet station is to a
low-cost kit (optionally with a relative random error). A *campaign* is a
series of daily runs of one fleet, so kits meet the stations often enough to
be calibrated, and their errors change as they would in service:

- day k starts k days after the first; each kit rides another bike's round
  every day (kit j rides round (j + k) mod n), so it passes other stations;
- each kit keeps its own errors (those the seed drew for it on day 0), ages by
  a day a day (its NO2 cell drifts), and gets its own hygroscopic growth κ
  around the fleet's (:attr:`CampaignSpec.kappa_spread`);
- :func:`true_kit_errors` gives every kit's drawn errors in the terms the
  calibration estimates (docs/calibration.md, "The model"), so tests compare.

Pure given its arguments: the same config and spec give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulators.environment import Environment, field_mean
from simulators.exceptions import SimulatorConfigError
from simulators.fleet import Fleet, SimulationConfig, stream
from simulators.sensors import KitCalibration, SensorSpec
from simulators.town import ROAD_ARTERIAL, Town
from simulators.truth import TRUTH_DTYPE
from simulators.truthflags import TruthFlag
from stream.core.binning import cells_at
from stream.core.calibration import HOUR_MS, REFERENCE_DTYPE, STATION_DTYPE
from stream.core.calibration_corrections import CorrectionSet

DAY_MS = 86_400_000

#: Random-stream purposes of this module, after those of simulators.fleet (0–8).
_STATIONS, _KAPPA, _REFERENCE_NOISE = 100, 101, 102

#: What the campaign's stations measure by default: Luchtmeetnet's usual three.
REFERENCE_METRICS = ("pm25_ugm3", "pm10_ugm3", "no2_ugm3")

#: The drawn errors of every kit, as the calibration model names them (per metric family).
KIT_ERRORS_DTYPE = np.dtype(
    [
        ("kit_id", "<u4"),
        ("pm_gain", "<f8"),
        ("pm_offset_ugm3", "<f8"),
        ("pm_kappa", "<f8"),  # hygroscopic growth above 75 % RH
        ("no2_gain", "<f8"),
        ("no2_offset_ugm3", "<f8"),  # drawn offset, at deployment (age 0)
        ("no2_drift_ugm3_per_day", "<f8"),
        ("no2_deployed_days", "<f8"),  # age of the cell at the campaign's start
        ("no2_temp_coeff", "<f8"),  # µg/m³ per °C of the true temperature above 20 °C
        ("temperature_offset_c", "<f8"),  # the kit's thermometer reads this much high
        ("humidity_offset_pct", "<f8"),
    ]
)


@dataclass(frozen=True, slots=True)
class ReferenceStation:
    station_id: str
    lat_deg: float
    lon_deg: float
    kind: str  # "traffic" (at an arterial road's kerb) or "background"


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """How long, how many stations, and how the kits' humidity response spreads."""

    days: int = 14
    n_traffic_stations: int = 1
    n_background_stations: int = 3
    kappa_spread: float = 0.03  # standard deviation of κ across kits around SensorSpec's
    reference_noise_relative: float = 0.0  # the stations' own random error, relative
    minute_samples: int = 60  # truth samples per station-hour
    new_cells: bool = False  # NO2 cells new at the start (age 0), else the age the seed drew

    def validate(self) -> None:
        if not 1 <= self.days <= 400:
            raise SimulatorConfigError(f"days must be 1–400 (got {self.days})")
        if self.n_traffic_stations < 0 or self.n_background_stations < 0:
            raise SimulatorConfigError("station counts must be ≥ 0")
        if self.n_traffic_stations + self.n_background_stations == 0:
            raise SimulatorConfigError("a campaign needs at least one reference station")
        if self.kappa_spread < 0 or self.reference_noise_relative < 0:
            raise SimulatorConfigError("kappa_spread and reference_noise_relative must be ≥ 0")
        if not 1 <= self.minute_samples <= 3600:
            raise SimulatorConfigError(f"minute_samples must be 1–3600 (got {self.minute_samples})")


@dataclass(frozen=True, eq=False)
class Campaign:
    """What a calibration test needs: readings with their truth, the stations, the errors."""

    config: SimulationConfig  # day 0's
    spec: CampaignSpec
    fleet: Fleet  # day 0's: the town, the environment, the kits
    stations: tuple[ReferenceStation, ...]
    readings: np.ndarray  # TRUTH_DTYPE, every day's deliverable readings
    reference: np.ndarray  # REFERENCE_DTYPE, every station-hour of the campaign
    kit_errors: np.ndarray  # KIT_ERRORS_DTYPE, one row per kit

    @property
    def station_array(self) -> np.ndarray:
        return stations_array(self.stations)

    @property
    def start_ms(self) -> int:
        return self.config.start_ms

    @property
    def end_ms(self) -> int:
        return (
            self.config.start_ms
            + (self.spec.days - 1) * DAY_MS
            + round(self.config.duration_s * 1000)
        )


def place_stations(
    town: Town,
    environment: Environment,
    *,
    n_traffic: int = 1,
    n_background: int = 3,
    seed: int = 0,
) -> tuple[ReferenceStation, ...]:
    """Stations on street nodes: traffic ones on arterial nodes, background ones ≥ 150 m from any.

    All within the inner 60 % of the town (where rounds go), at least 300 m from a
    depot (privacy zones) and 600 m from each other, picked at random among those.
    """
    rng = stream(seed, _STATIONS)
    xy = town.nodes_xy_m
    half = town.spec.half_size_m
    dist_art = environment.distance_to_arterial_m(xy[:, 0], xy[:, 1])
    depots = town.depots_xy_m
    depot_d = np.hypot(xy[:, None, 0] - depots[:, 0], xy[:, None, 1] - depots[:, 1]).min(axis=1)
    inner = (np.abs(xy[:, 0]) < 0.6 * half) & (np.abs(xy[:, 1]) < 0.6 * half) & (depot_d > 300)
    on_arterial = np.zeros(len(xy), bool)
    arterial_edges = town.edges[town.edge_class == ROAD_ARTERIAL]
    on_arterial[arterial_edges.ravel()] = True
    chosen: list[int] = []
    out: list[ReferenceStation] = []
    for kind, count, ok in (
        ("traffic", n_traffic, inner & on_arterial),
        ("background", n_background, inner & (dist_art >= 150.0)),
    ):
        candidates = rng.permutation(np.flatnonzero(ok)).tolist()
        placed = 0
        for node in candidates:
            if placed == count:
                break
            if any(np.hypot(*(xy[node] - xy[c])) < 600.0 for c in chosen):
                continue
            chosen.append(node)
            placed += 1
            lat, lon = town.to_latlon(xy[node, 0:1], xy[node, 1:2])
            out.append(
                ReferenceStation(f"SIM{len(out) + 1:03d}", float(lat[0]), float(lon[0]), kind)
            )
        if placed < count:
            raise SimulatorConfigError(f"room for only {placed} {kind} stations in this town")
    return tuple(out)


def stations_array(stations: tuple[ReferenceStation, ...]) -> np.ndarray:
    out = np.zeros(len(stations), STATION_DTYPE)
    out["station_id"] = [s.station_id for s in stations]
    out["lat_deg"] = [s.lat_deg for s in stations]
    out["lon_deg"] = [s.lon_deg for s in stations]
    out["kind"] = [s.kind for s in stations]
    return out


def hourly_reference(
    environment: Environment,
    stations: tuple[ReferenceStation, ...],
    start_ms: int,
    end_ms: int,
    *,
    metrics: tuple[str, ...] = REFERENCE_METRICS,
    minute_samples: int = 60,
    noise_relative: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Every station's hourly mean of the truth for the clock hours touching [start_ms, end_ms).

    Each hour is sampled at ``minute_samples`` evenly spaced instants; all values valid.
    """
    first = (start_ms // HOUR_MS) * HOUR_MS
    hours = np.arange(first, end_ms, HOUR_MS, dtype=np.int64)
    offsets = ((np.arange(minute_samples) + 0.5) * (HOUR_MS / minute_samples)).astype(np.int64)
    ts = (hours[:, None] + offsets[None, :]).ravel()
    rng = stream(seed, _REFERENCE_NOISE)
    rows: list[np.ndarray] = []
    for st in stations:
        lat = np.full(len(ts), st.lat_deg)
        lon = np.full(len(ts), st.lon_deg)
        fields = environment.fields(lat, lon, ts)
        for metric in metrics:
            per_hour = fields[metric].reshape(len(hours), minute_samples)
            means = np.array([field_mean(metric, row) for row in per_hour])
            if noise_relative > 0:
                means = means * (1 + noise_relative * rng.normal(0.0, 1.0, len(means)))
            part = np.zeros(len(hours), REFERENCE_DTYPE)
            part["station_id"] = st.station_id
            part["metric"] = metric
            part["hour_start_ms"] = hours
            part["value"] = means
            part["valid"] = True
            rows.append(part)
    return np.concatenate(rows) if rows else np.zeros(0, REFERENCE_DTYPE)


def kit_kappas(config: SimulationConfig, n: int, spread: float) -> np.ndarray:
    """Each kit's κ, around SensorSpec.humidity_kappa, never negative."""
    rng = stream(config.seed, _KAPPA)
    return np.maximum(config.sensors.humidity_kappa + spread * rng.normal(0.0, 1.0, n), 0.0)


def true_kit_errors(
    fleet: Fleet, spec: SensorSpec | None = None, kappas: np.ndarray | None = None
) -> np.ndarray:
    """The errors each kit of ``fleet`` was drawn with (KIT_ERRORS_DTYPE), in bike order."""
    sensors = spec or fleet.config.sensors
    out = np.zeros(len(fleet.bikes), KIT_ERRORS_DTYPE)
    for i, bike in enumerate(fleet.bikes):
        c = bike.calibration
        kappa = c.kappa(sensors) if kappas is None else float(kappas[i])
        out[i] = (
            bike.kit_id,
            c.pm_gain,
            c.pm_offset_ugm3,
            kappa,
            c.no2_gain,
            c.no2_offset_ugm3,
            c.no2_drift_ugm3_per_day,
            c.deployed_days,
            c.no2_temperature_coeff,
            c.temperature_offset_c,
            c.humidity_offset_pct,
        )
    return out


def no2_effective_offset(errors: np.ndarray, at_ms: np.ndarray | int, start_ms: int) -> np.ndarray:
    """The NO2 offset the calibration sees at ``at_ms``: drawn offset + drift × age.

    The model's temperature term uses the kit's own thermometer, which reads
    ``temperature_offset_c`` high, so c·(T_kit − 20) over-counts c·offset: that is
    taken off here.
    """
    age = errors["no2_deployed_days"] + (np.asarray(at_ms) - start_ms) / DAY_MS
    return np.asarray(
        errors["no2_offset_ugm3"]
        + errors["no2_drift_ugm3_per_day"] * age
        - errors["no2_temp_coeff"] * errors["temperature_offset_c"]
    )


def simulate_campaign(config: SimulationConfig, spec: CampaignSpec | None = None) -> Campaign:
    """Run ``spec.days`` daily runs of the fleet of ``config`` and record what calibration needs.

    Readings are the deliverable ones without the flags a pipeline's QA removes
    (TruthFlag.default_excluded: warm-up, no fix, GNSS jumps, stuck sensors).
    """
    sp = spec or CampaignSpec()
    sp.validate()
    base = Fleet(config)
    n = len(base.bikes)
    kappas = kit_kappas(config, n, sp.kappa_spread)
    own: list[KitCalibration] = [
        replace(
            b.calibration,
            humidity_kappa=float(k),
            deployed_days=0.0 if sp.new_cells else b.calibration.deployed_days,
        )
        for b, k in zip(base.bikes, kappas, strict=True)
    ]
    kits = tuple(base.kits)
    stations = place_stations(
        base.town,
        base.environment,
        n_traffic=sp.n_traffic_stations,
        n_background=sp.n_background_stations,
        seed=config.seed,
    )
    chunks: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    excluded = int(TruthFlag.default_excluded() | TruthFlag.undeliverable())
    for day in range(sp.days):
        order = [(i + day) % n for i in range(n)]  # bike i carries kit order[i] today
        cfg = replace(
            config,
            record_truth=True,
            start_ms=config.start_ms + day * DAY_MS,
            kits=tuple(kits[j] for j in order),
        )
        fleet = Fleet(cfg)
        fleet.bikes = tuple(
            replace(
                bike,
                calibration=replace(own[j], deployed_days=own[j].deployed_days + day),
            )
            for bike, j in zip(fleet.bikes, order, strict=True)
        )
        run = fleet.run()
        for _ in run:
            pass
        if run.truth is None:  # pragma: no cover - record_truth is forced on above
            raise SimulatorConfigError("a campaign needs the truth record")
        r = run.truth.readings
        chunks.append(r[(r["flags"] & excluded) == 0])
        # The hours the kits were out: the environment is the same function every day.
        refs.append(
            hourly_reference(
                base.environment,
                stations,
                cfg.start_ms,
                cfg.end_ms,
                minute_samples=sp.minute_samples,
                noise_relative=sp.reference_noise_relative,
                seed=config.seed * 1000 + day,
            )
        )
    readings = np.concatenate(chunks) if chunks else np.zeros(0, TRUTH_DTYPE)
    reference = np.unique(np.concatenate(refs))
    errors = true_kit_errors(base, kappas=kappas)
    if sp.new_cells:
        errors["no2_deployed_days"] = 0.0
    return Campaign(
        config=config,
        spec=sp,
        fleet=base,
        stations=stations,
        readings=readings,
        reference=reference,
        kit_errors=errors,
    )


def kit_error_z(
    campaign: Campaign, pairs: np.ndarray, corrections: CorrectionSet, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """(estimate − drawn)/σ of the gain and of the offset of each kit that got a correction
    of its own for ``metric`` (NO2: the drawn offset at the mean time of the kit's pairs
    without a clipped reading, drift included): how well the fit recovers the truth."""
    z_gain, z_offset = [], []
    for e in campaign.kit_errors:
        corr = corrections.kits.get((int(e["kit_id"]), metric))
        if corr is None or corr.source != "kit":
            continue
        if metric == "no2_ugm3":
            kp = pairs[(pairs["metric"] == metric) & (pairs["kit_id"] == e["kit_id"])]
            mid = int(kp["hour_start_ms"][kp["n_zero"] == 0].mean())
            true_g = e["no2_gain"]
            true_o = float(no2_effective_offset(e, mid, campaign.start_ms))
        else:
            true_g, true_o = e["pm_gain"], e["pm_offset_ugm3"]
        z_gain.append((corr.gain - true_g) / corr.se("gain"))
        z_offset.append((corr.offset - true_o) / corr.se("offset"))
    return np.array(z_gain), np.array(z_offset)


def cell_hour_rmse(readings: np.ndarray, values: np.ndarray, metric: str, resolution: int) -> float:
    """RMSE against the truth of the cell-hour means of ``values`` (one per reading of
    ``readings``, NaN left out), cells at ``resolution`` from the reported positions."""
    ok = np.isfinite(values)
    r, v = readings[ok], values[ok]
    keys = np.stack(
        [cells_at(r["lat_deg"], r["lon_deg"], resolution), r["ts_ms"] // HOUR_MS], axis=1
    )
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    n = np.bincount(inv)
    est = np.bincount(inv, v) / n
    true = np.bincount(inv, r[f"true_{metric}"]) / n
    return float(np.sqrt(np.mean((est - true) ** 2)))
