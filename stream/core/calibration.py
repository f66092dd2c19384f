"""Co-location with reference stations: kit-hours near a station paired with its hourly value.

A reference station (Luchtmeetnet, or the simulator's) reports one value per
metric and clock hour. A kit that rides within :attr:`PairingConfig.max_distance_m`
of it during that hour measured, roughly, the same air; the mean of those
readings and the station's value make one *pair*, the unit every correction is
estimated from (:mod:`stream.core.calibration_fit`). The method, the default
distance and why it was chosen: docs/calibration.md.

Metrics are named by their reading column (``pm25_ugm3``, ``no2_ugm3`` ...);
station ids are strings (Luchtmeetnet's are like ``NL10641``). Pure numpy: no
I/O, no database; the arrays in and out are the records storage keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from firmware_protocol.frames import StatusBits
from stream.core.exceptions import InvalidBatchError, InvalidConfigError

#: Metrics a reference station can calibrate: Luchtmeetnet measures PM10, PM2.5 and NO2 at
#: most stations (PM1 at a few), never noise; temperature and humidity are covariates.
CALIBRATED_METRICS = ("pm1_ugm3", "pm25_ugm3", "pm10_ugm3", "no2_ugm3")
PM_METRICS = frozenset({"pm1_ugm3", "pm25_ugm3", "pm10_ugm3"})
#: Reference data names metrics as the API does (docs/reference-data.md): either is taken.
API_METRIC_COLUMNS = {
    "pm1": "pm1_ugm3",
    "pm25": "pm25_ugm3",
    "pm10": "pm10_ugm3",
    "no2": "no2_ugm3",
}

HOUR_MS = 3_600_000

#: Mean Earth radius (IUGG), metres; the spherical model's error is far below GNSS error.
EARTH_RADIUS_M = 6_371_008.8

#: Chosen by measurement on the simulator (docs/calibration.md, "The distance"): the
#: largest radii at which the kit-hour means of the *true* field near a station stay
#: within about 2 % of the station's own hourly mean, on average (a tenth of the 8–10 %
#: gain errors being estimated). Pollution falls off within 50–60 m of a busy road, so
#: a traffic station (at the kerb) is only represented by the few metres around it.
DEFAULT_MAX_DISTANCE_M = 100.0
DEFAULT_TRAFFIC_MAX_DISTANCE_M = 25.0

#: A station's kind is the EU classification of air-quality stations (Commission
#: Implementing Decision 2011/850/EU, Annex II): "traffic", "industrial" or
#: "background"; "" when not known (taken as background).
STATION_KINDS = ("traffic", "industrial", "background", "")

STATION_DTYPE = np.dtype(
    [("station_id", "<U32"), ("lat_deg", "<f8"), ("lon_deg", "<f8"), ("kind", "<U16")]
)

#: One hourly reference value: the hour [hour_start_ms, hour_start_ms + 1 h), UTC.
REFERENCE_DTYPE = np.dtype(
    [
        ("station_id", "<U32"),
        ("metric", "<U16"),
        ("hour_start_ms", "<i8"),
        ("value", "<f8"),
        ("valid", "?"),
    ]
)

#: One co-location: a kit's readings of one metric near one station within one hour.
PAIR_DTYPE = np.dtype(
    [
        ("kit_id", "<u4"),
        ("station_id", "<U32"),
        ("metric", "<U16"),
        ("hour_start_ms", "<i8"),
        ("kit_mean", "<f8"),  # arithmetic mean of the kit's raw readings
        ("n", "<i8"),  # readings in that mean
        ("humidity_mean_pct", "<f8"),  # the kit's own RH over the same readings; NaN if none
        ("humid_term_mean", "<f8"),  # mean of humid_term(RH) over them (0 when dry)
        ("temperature_mean_c", "<f8"),  # the kit's own temperature; NaN if none
        ("distance_mean_m", "<f8"),  # mean distance of the readings from the station
        ("n_zero", "<i8"),  # readings at 0: possibly clipped by the firmware (censored)
        ("reference", "<f8"),  # the station's hourly value
    ]
)


@dataclass(frozen=True, slots=True)
class PairingConfig:
    """What counts as a co-location."""

    max_distance_m: float = DEFAULT_MAX_DISTANCE_M  # background (and unknown) stations
    traffic_max_distance_m: float = DEFAULT_TRAFFIC_MAX_DISTANCE_M  # traffic and industrial
    min_readings: int = 3  # fewer readings than this in the kit-hour: no pair
    humid_rh_pct: float = 75.0  # optical PM grows above this RH (docs/design.md, domain facts)

    def __post_init__(self) -> None:
        for name in ("max_distance_m", "traffic_max_distance_m"):
            d = getattr(self, name)
            if not 0 < d <= 5_000:
                msg = f"co-location distance {name} must be 0 < d <= 5000 m (got {d})"
                raise InvalidConfigError(msg)
        if self.min_readings < 1:
            msg = f"min_readings must be at least 1 (got {self.min_readings})"
            raise InvalidConfigError(msg)
        if not 0 <= self.humid_rh_pct < 97:
            msg = f"humid_rh_pct must be 0–97 % (got {self.humid_rh_pct})"
            raise InvalidConfigError(msg)


#: Water activity at which the growth term stops growing: at 97 % RH and above it is
#: fog, where optical PM is excluded anyway (QaFlag.FOG_PM) and a/(1−a) would diverge.
_MAX_WATER_ACTIVITY = 0.97


def humid_term(rh_pct: np.ndarray, threshold_pct: float = 75.0) -> np.ndarray:
    """h(RH) = a/(1−a) − a₀/(1−a₀) above the threshold a₀, else 0; a = RH/100, capped at 0.97.

    κ-Köhler theory (Petters & Kreidenweis 2007) gives a particle's volume growth
    with water activity a as 1 + κ·a/(1−a); the threshold leaves the dry range alone,
    where low-cost optical sensors read no measurable growth. An optical sensor then
    reads mass × (1 + κ·h(RH)). NaN (no humidity) gives 0: no growth assumed.
    """
    h = humid_growth(np.asarray(rh_pct, dtype=np.float64), threshold_pct, NUMPY_OPS)
    return np.asarray(np.where(np.isfinite(h), h, 0.0))


class ClipOps(Protocol):
    """The two non-arithmetic operations :func:`humid_growth` needs."""

    def clip(self, x: Any, lo: float, hi: float) -> Any: ...

    def maximum(self, x: Any, lo: float) -> Any: ...


class _NumpyOps:
    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return np.clip(x, lo, hi)

    def maximum(self, x: Any, lo: float) -> Any:
        return np.maximum(x, lo)


NUMPY_OPS: ClipOps = _NumpyOps()


def humid_growth(rh_pct: Any, threshold_pct: Any, ops: ClipOps) -> Any:
    """h(RH) over operands that have arithmetic operators (numpy arrays, or the SQL
    expressions of storage/correction_sql.py), clipping with ``ops``: one definition,
    so that exports computed by the database give what :func:`humid_term` gives."""
    a = ops.clip(rh_pct / 100.0, 0.0, _MAX_WATER_ACTIVITY)
    a0 = threshold_pct / 100.0
    return ops.maximum(a / (1 - a) - a0 / (1 - a0), 0.0)


def distances_m(lat_deg: np.ndarray, lon_deg: np.ndarray, stations: np.ndarray) -> np.ndarray:
    """Great-circle (haversine) distances, shape (readings, stations); NaN without a position."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))[:, None]
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))[:, None]
    slat = np.radians(stations["lat_deg"].astype(np.float64))[None, :]
    slon = np.radians(stations["lon_deg"].astype(np.float64))[None, :]
    a = np.sin((lat - slat) / 2) ** 2 + np.cos(lat) * np.cos(slat) * np.sin((lon - slon) / 2) ** 2
    out: np.ndarray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return out


def default_usable(readings: np.ndarray) -> np.ndarray:
    """Readings fit to pair when the caller has no QA policy to hand: the kit is warmed up."""
    return np.asarray((readings["status"] & int(StatusBits.WARMING_UP)) == 0)


_REQUIRED = ("kit_id", "ts_ms", "lat_deg", "lon_deg")


def colocate(
    readings: np.ndarray,
    stations: np.ndarray,
    reference: np.ndarray,
    *,
    metrics: Sequence[str] = ("pm25_ugm3", "pm10_ugm3", "no2_ugm3"),
    config: PairingConfig | None = None,
    usable: np.ndarray | Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Pairs (PAIR_DTYPE) of kit-hour means near a station with the station's valid hourly value.

    Near: within ``traffic_max_distance_m`` of a traffic or industrial station,
    ``max_distance_m`` of any other.

    ``readings`` is any structured array with kit_id, ts_ms, lat_deg, lon_deg and the
    metric columns (READING_DTYPE, the simulator's TRUTH_DTYPE); humidity_pct and
    temperature_c are used when present. A reading within ``max_distance_m`` of
    several stations counts for the nearest. ``usable`` (one mask, or one per metric)
    says which readings the QA policy keeps; by default those not warming up (with a
    status column) or all. Sorted by (metric, kit, station, hour).
    """
    cfg = config or PairingConfig()
    _check_columns(readings, (*_REQUIRED, *metrics), "readings")
    _check_columns(stations, STATION_DTYPE.names or (), "stations")
    _check_columns(reference, REFERENCE_DTYPE.names or (), "reference")
    unknown = sorted(set(metrics) - set(CALIBRATED_METRICS))
    if unknown:
        msg = f"no reference calibration for {', '.join(unknown)}; known: {CALIBRATED_METRICS}"
        raise InvalidConfigError(msg)
    bad_kind = sorted(set(stations["kind"].tolist()) - set(STATION_KINDS))
    if bad_kind:
        msg = f"unknown station kind(s) {bad_kind}; known: {STATION_KINDS}"
        raise InvalidBatchError(msg)
    if len(np.unique(stations["station_id"])) != len(stations):
        msg = "station ids must be unique"
        raise InvalidBatchError(msg)
    if len(readings) == 0 or len(stations) == 0:
        return np.zeros(0, PAIR_DTYPE)

    names = readings.dtype.names or ()
    base = _usable_base(readings, usable, names)
    d = distances_m(readings["lat_deg"], readings["lon_deg"], stations)
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(d), d, np.inf)
    nearest = np.argmin(d, axis=1)
    dist = d[np.arange(len(readings)), nearest]
    near_kerb = np.isin(stations["kind"], ("traffic", "industrial"))
    radius = np.where(near_kerb, cfg.traffic_max_distance_m, cfg.max_distance_m)
    near = dist <= radius[nearest]
    hour = (readings["ts_ms"].astype(np.int64) // HOUR_MS) * HOUR_MS
    rh = readings["humidity_pct"].astype(np.float64) if "humidity_pct" in names else None
    temp = readings["temperature_c"].astype(np.float64) if "temperature_c" in names else None
    h = humid_term(rh, cfg.humid_rh_pct) if rh is not None else np.zeros(len(readings))

    ref_index = _reference_index(reference, stations)
    out: list[np.ndarray] = []
    for metric in metrics:
        values = readings[metric].astype(np.float64)
        mask = near & np.isfinite(values) & _metric_mask(base, metric)
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        kit = readings["kit_id"][idx].astype(np.int64)
        st = nearest[idx].astype(np.int64)
        hr = hour[idx]
        order = np.lexsort((hr, st, kit))
        idx, kit, st, hr = idx[order], kit[order], st[order], hr[order]
        change = (np.diff(kit) != 0) | (np.diff(st) != 0) | (np.diff(hr) != 0)
        starts = np.concatenate(([0], np.flatnonzero(change) + 1))
        counts = np.diff(np.append(starts, len(idx)))
        pairs = np.zeros(len(starts), PAIR_DTYPE)
        pairs["kit_id"] = kit[starts]
        pairs["station_id"] = stations["station_id"][st[starts]]
        pairs["metric"] = metric
        pairs["hour_start_ms"] = hr[starts]
        pairs["n"] = counts
        pairs["kit_mean"] = np.add.reduceat(values[idx], starts) / counts
        pairs["humid_term_mean"] = np.add.reduceat(h[idx], starts) / counts
        pairs["humidity_mean_pct"] = _nanmean_groups(rh, idx, starts)
        pairs["temperature_mean_c"] = _nanmean_groups(temp, idx, starts)
        pairs["distance_mean_m"] = np.add.reduceat(dist[idx], starts) / counts
        pairs["n_zero"] = np.add.reduceat((values[idx] <= 0).astype(np.int64), starts)
        pairs["reference"] = [
            ref_index.get((metric, int(s), int(t)), np.nan)
            for s, t in zip(st[starts].tolist(), hr[starts].tolist(), strict=True)
        ]
        keep = (counts >= cfg.min_readings) & np.isfinite(pairs["reference"])
        out.append(pairs[keep])
    if not out:
        return np.zeros(0, PAIR_DTYPE)
    return np.concatenate(out)


def _check_columns(array: np.ndarray, columns: Sequence[str], what: str) -> None:
    names = array.dtype.names or ()
    missing = [c for c in columns if c not in names]
    if missing:
        msg = f"{what} lack the column(s) {', '.join(missing)}"
        raise InvalidBatchError(msg)


def _usable_base(
    readings: np.ndarray,
    usable: np.ndarray | Mapping[str, np.ndarray] | None,
    names: Sequence[str],
) -> np.ndarray | Mapping[str, np.ndarray]:
    if usable is None:
        return default_usable(readings) if "status" in names else np.ones(len(readings), bool)
    masks = usable.values() if isinstance(usable, Mapping) else (usable,)
    for m in masks:
        if np.shape(m) != (len(readings),):
            msg = f"a usable mask has shape {np.shape(m)}; the readings are {len(readings)}"
            raise InvalidBatchError(msg)
    return usable


def _metric_mask(base: np.ndarray | Mapping[str, np.ndarray], metric: str) -> np.ndarray:
    if isinstance(base, Mapping):
        if metric not in base:
            msg = f"usable masks given per metric, but none for {metric}"
            raise InvalidBatchError(msg)
        return np.asarray(base[metric], dtype=bool)
    return np.asarray(base, dtype=bool)


def _nanmean_groups(values: np.ndarray | None, idx: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if values is None:
        return np.full(len(starts), np.nan)
    v = values[idx]
    ok = np.isfinite(v)
    n = np.add.reduceat(ok.astype(np.int64), starts)
    s = np.add.reduceat(np.where(ok, v, 0.0), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _reference_index(
    reference: np.ndarray, stations: np.ndarray
) -> dict[tuple[str, int, int], float]:
    """(metric, station index, hour start) → valid value; an hour reported twice must agree."""
    position = {sid: i for i, sid in enumerate(stations["station_id"].tolist())}
    out: dict[tuple[str, int, int], float] = {}
    valid = reference[reference["valid"] & np.isfinite(reference["value"])]
    for sid, metric, hour, value in zip(
        valid["station_id"].tolist(),
        valid["metric"].tolist(),
        valid["hour_start_ms"].tolist(),
        valid["value"].tolist(),
        strict=True,
    ):
        if sid not in position:
            continue  # a station nobody asked about
        if hour % HOUR_MS:
            msg = f"reference value of {sid} for {metric} starts at {hour} ms, not on an hour"
            raise InvalidBatchError(msg)
        key = (API_METRIC_COLUMNS.get(metric.lower(), metric), position[sid], hour)
        if key in out and out[key] != value:
            msg = f"station {sid} reports two values for {metric} in the hour starting {hour} ms"
            raise InvalidBatchError(msg)
        out[key] = value
    return out
