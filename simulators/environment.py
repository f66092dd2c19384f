"""The ground truth: pollution and noise fields over the town, as functions of place and time.

Every field is a pure, vectorised function of (x, y, ts_ms) given the seed, so
the truth at any point, for any cell and window, can be asked for after the
fact. The fields are made of:

- a background level, scaled by atmospheric mixing (worse when the air is
  stagnant, and in fog) and varied smoothly in space;
- a road contribution that decays with distance from the arterial roads and
  follows a daily traffic curve (morning and evening rush hours);
- a few point hotspots (a building site for coarse dust, a bus station for NO2);
- weather: relative humidity with a daily cycle and multi-hour episodes, fog
  when it saturates, and temperature;
- noise, summed on energy: an urban background, a residential street level and
  arterial traffic, louder by day.

The levels are of the order of Dutch urban background and roadside values (the
RIVM Luchtmeetnet network reports annual means around 8–10 µg/m³ PM2.5 and
15–25 µg/m³ NO2 for towns in South Holland in recent years); they are chosen to
look plausible and to give the pipeline gradients to find, not fitted to data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import h3.api.basic_int as h3
import numpy as np

from simulators.exceptions import SimulatorConfigError
from simulators.town import Town

#: The truth fields, named as the reading columns they are measured into.
FIELDS = (
    "pm1_ugm3",
    "pm25_ugm3",
    "pm10_ugm3",
    "no2_ugm3",
    "noise_laeq_db",
    "temperature_c",
    "humidity_pct",
)
#: Fields whose windowed mean is taken on energy (docs/design.md decision 3), not arithmetically.
ENERGY_FIELDS = frozenset({"noise_laeq_db"})

#: Relative humidity at and above which we call it fog.
FOG_RH_PCT = 97.0


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """Levels of the truth fields. µg/m³ and dB(A)."""

    timezone: str = "Europe/Amsterdam"
    background_pm25_ugm3: float = 8.0
    background_no2_ugm3: float = 14.0
    road_pm25_ugm3: float = 5.0  # extra PM2.5 on an arterial road at full traffic
    road_no2_ugm3: float = 35.0
    road_decay_m: float = 50.0  # e-folding distance of the road contribution
    n_hotspots: int = 3
    noise_background_db: float = 42.0
    noise_street_db: float = 52.0  # on a residential street by day
    noise_arterial_db: float = 68.0  # at the kerb of an arterial road at full traffic
    mean_humidity_pct: float = 74.0

    def validate(self) -> None:
        for name in (
            "background_pm25_ugm3",
            "background_no2_ugm3",
            "road_pm25_ugm3",
            "road_no2_ugm3",
            "road_decay_m",
        ):
            if getattr(self, name) < 0:
                raise SimulatorConfigError(f"{name} must be ≥ 0 (got {getattr(self, name)})")
        if not 0 <= self.n_hotspots <= 20:
            raise SimulatorConfigError(f"n_hotspots must be 0–20 (got {self.n_hotspots})")
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise SimulatorConfigError(f"unknown timezone {self.timezone!r}") from exc


@dataclass(frozen=True, slots=True)
class Hotspot:
    x_m: float
    y_m: float
    radius_m: float
    pm25_ugm3: float
    pm10_ugm3: float
    no2_ugm3: float
    kind: str


class _SmoothSeries:
    """A smooth random function of time: a few sinusoids with random periods and phases."""

    def __init__(
        self, rng: np.random.Generator, periods_h: tuple[float, float], n: int = 5
    ) -> None:
        self.omega = 2 * math.pi / (rng.uniform(*periods_h, size=n) * 3_600_000.0)
        self.phase = rng.uniform(0, 2 * math.pi, size=n)
        self.scale = 1.0 / math.sqrt(n / 2)  # unit variance, roughly

    def __call__(self, ts_ms: np.ndarray) -> np.ndarray:
        t = np.asarray(ts_ms, dtype=np.float64)[..., None]
        return np.asarray(np.sin(t * self.omega + self.phase).sum(axis=-1) * self.scale)


class Environment:
    """The truth fields over one town; deterministic given ``rng``."""

    def __init__(self, town: Town, spec: EnvironmentSpec, rng: np.random.Generator) -> None:
        spec.validate()
        self.town = town
        self.spec = spec
        self._tz = ZoneInfo(spec.timezone)
        self._arterials = town.arterial_segments()
        self._humidity_episodes = _SmoothSeries(rng, (6.0, 60.0))
        self._mixing = _SmoothSeries(rng, (4.0, 36.0))
        self._temperature = _SmoothSeries(rng, (12.0, 96.0))
        # Smooth spatial variation of the background: ±15 %, wavelengths 0.4–2 km.
        n = 6
        self._k = rng.uniform(2 * math.pi / 2000.0, 2 * math.pi / 400.0, size=n)
        self._dir = rng.uniform(0, 2 * math.pi, size=n)
        self._sp_phase = rng.uniform(0, 2 * math.pi, size=n)
        half = town.spec.half_size_m
        kinds = ("building site", "bus station", "industrial yard")
        self.hotspots: tuple[Hotspot, ...] = tuple(
            Hotspot(
                x_m=float(rng.uniform(-0.7 * half, 0.7 * half)),
                y_m=float(rng.uniform(-0.7 * half, 0.7 * half)),
                radius_m=float(rng.uniform(80.0, 200.0)),
                pm25_ugm3=(6.0, 2.0, 4.0)[i % 3],
                pm10_ugm3=(30.0, 4.0, 12.0)[i % 3],
                no2_ugm3=(3.0, 25.0, 10.0)[i % 3],
                kind=kinds[i % 3],
            )
            for i in range(spec.n_hotspots)
        )

    # -- time ---------------------------------------------------------------

    def local_hour(self, ts_ms: np.ndarray) -> np.ndarray:
        """Hour of the day (fractional) in the town's time zone, daylight saving included."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        hours, inverse = np.unique(ts // 3_600_000, return_inverse=True)
        offsets_ms = np.array(
            [
                (
                    datetime.fromtimestamp(int(h) * 3600, tz=UTC).astimezone(self._tz).utcoffset()
                    or _ZERO
                ).total_seconds()
                * 1000.0
                for h in hours.tolist()
            ]
        )
        local_ms = ts + offsets_ms[inverse.reshape(ts.shape)]
        return np.asarray((local_ms % 86_400_000) / 3_600_000.0)

    @staticmethod
    def traffic(hour: np.ndarray) -> np.ndarray:
        """Relative traffic on the arterials: 1 at the morning peak, low at night."""
        day = 0.25 + 0.45 / (1 + np.exp(-(hour - 6.5) * 2.5)) / (1 + np.exp((hour - 20.0) * 1.5))
        rush = 0.55 * np.exp(-(((hour - 8.0) / 1.2) ** 2)) + 0.45 * np.exp(
            -(((hour - 17.2) / 1.6) ** 2)
        )
        return np.asarray(day + rush)

    def humidity_pct(self, ts_ms: np.ndarray) -> np.ndarray:
        """Relative humidity: humid nights and mornings, with episodes lasting hours."""
        hour = self.local_hour(ts_ms)
        rh = (
            self.spec.mean_humidity_pct
            + 12.0 * np.cos(2 * math.pi * (hour - 5.0) / 24.0)
            + 9.0 * self._humidity_episodes(ts_ms)
        )
        return np.clip(rh, 20.0, 100.0)

    def temperature_c(self, ts_ms: np.ndarray) -> np.ndarray:
        hour = self.local_hour(ts_ms)
        return np.asarray(
            12.0 + 5.0 * np.cos(2 * math.pi * (hour - 15.0) / 24.0) + 3.0 * self._temperature(ts_ms)
        )

    def mixing_factor(
        self, ts_ms: np.ndarray, humidity_pct: np.ndarray | None = None
    ) -> np.ndarray:
        """How much pollution the air holds: above 1 when stagnant, 1.3× more in fog."""
        rh = self.humidity_pct(ts_ms) if humidity_pct is None else humidity_pct
        base = np.exp(0.25 * self._mixing(ts_ms))
        return np.asarray(base * np.where(rh >= FOG_RH_PCT, 1.3, 1.0))

    # -- space --------------------------------------------------------------

    def distance_to_arterial_m(self, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        """Exact distance to the nearest arterial segment.

        Points are grouped in tiles; each tile is checked only against segments
        that come within ``_TILE_MARGIN_M`` of it, which finds the nearest one
        whenever it is that close, and falls back to all segments otherwise.
        """
        x = np.asarray(x_m, dtype=np.float64).ravel()
        y = np.asarray(y_m, dtype=np.float64).ravel()
        seg = self._arterials
        if len(seg) == 0:
            return np.full(np.shape(x_m), np.inf)
        out = np.empty(len(x))
        keys = (np.floor(x / _TILE_M).astype(np.int64) << 32) + np.floor(y / _TILE_M).astype(
            np.int64
        )
        order = np.argsort(keys, kind="stable")
        bounds = np.flatnonzero(np.diff(keys[order])) + 1
        lo_x = np.minimum(seg[:, 0], seg[:, 2])
        hi_x = np.maximum(seg[:, 0], seg[:, 2])
        lo_y = np.minimum(seg[:, 1], seg[:, 3])
        hi_y = np.maximum(seg[:, 1], seg[:, 3])
        for idx in np.split(order, bounds):
            tx0 = math.floor(x[idx[0]] / _TILE_M) * _TILE_M - _TILE_MARGIN_M
            ty0 = math.floor(y[idx[0]] / _TILE_M) * _TILE_M - _TILE_MARGIN_M
            span = _TILE_M + 2 * _TILE_MARGIN_M
            near = (hi_x >= tx0) & (lo_x <= tx0 + span) & (hi_y >= ty0) & (lo_y <= ty0 + span)
            d = _point_segment_distance(x[idx], y[idx], seg[near])
            far = d > _TILE_MARGIN_M
            if far.any():
                d[far] = _point_segment_distance(x[idx][far], y[idx][far], seg)
            out[idx] = d
        return out.reshape(np.shape(x_m))

    def _spatial(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        proj = (x[..., None] * np.cos(self._dir) + y[..., None] * np.sin(self._dir)) * self._k
        return np.asarray(1.0 + 0.15 * np.sin(proj + self._sp_phase).mean(axis=-1) * math.sqrt(2))

    # -- the fields ---------------------------------------------------------

    def fields_xy(
        self, x_m: np.ndarray, y_m: np.ndarray, ts_ms: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Every truth field at each (x, y, t); the arrays broadcast together."""
        x, y, ts = np.broadcast_arrays(
            np.asarray(x_m, dtype=np.float64),
            np.asarray(y_m, dtype=np.float64),
            np.asarray(ts_ms, dtype=np.int64),
        )
        s = self.spec
        hour = self.local_hour(ts)
        traffic = self.traffic(hour)
        rh = self.humidity_pct(ts)
        mix = self.mixing_factor(ts, rh)
        d = self.distance_to_arterial_m(x, y)
        road = traffic * np.exp(-d / max(s.road_decay_m, 1e-9))
        road_no2 = traffic * np.exp(-d / max(s.road_decay_m * 1.2, 1e-9))
        bg = s.background_pm25_ugm3 * mix * self._spatial(x, y)

        hot25 = np.zeros(x.shape)
        hot10 = np.zeros(x.shape)
        hot_no2 = np.zeros(x.shape)
        active = np.clip((hour - 7.0) * 2, 0, 1) * np.clip((18.0 - hour) * 2, 0, 1)  # working hours
        for h in self.hotspots:
            w = np.exp(-((x - h.x_m) ** 2 + (y - h.y_m) ** 2) / (2 * h.radius_m**2))
            on = active if h.kind == "building site" else np.maximum(active, 0.3)
            hot25 += h.pm25_ugm3 * w * on
            hot10 += h.pm10_ugm3 * w * on
            hot_no2 += h.no2_ugm3 * w * on

        pm25 = bg + s.road_pm25_ugm3 * road * mix + hot25
        pm1 = 0.65 * bg + 0.8 * s.road_pm25_ugm3 * road * mix + 0.4 * hot25
        pm10 = 1.7 * bg + 2.0 * s.road_pm25_ugm3 * road * mix + hot25 + hot10
        no2 = (
            s.background_no2_ugm3 * (0.6 + 0.4 * traffic) * mix * self._spatial(y, x)
            + s.road_no2_ugm3 * road_no2 * mix
            + hot_no2
        )

        # Noise: energy sum of an urban background, the street the bike is on, and
        # arterial traffic falling off about 3 dB per doubling of distance (a line source).
        day_db = 10 * np.log10(np.maximum(traffic, 1e-3))
        background = s.noise_background_db + 0.5 * day_db
        street = s.noise_street_db + day_db
        arterial = s.noise_arterial_db + day_db - 10 * np.log10(1 + d / 7.5)
        noise = 10 * np.log10(10 ** (background / 10) + 10 ** (street / 10) + 10 ** (arterial / 10))

        return {
            "pm1_ugm3": pm1,
            "pm25_ugm3": pm25,
            "pm10_ugm3": pm10,
            "no2_ugm3": no2,
            "noise_laeq_db": noise,
            "temperature_c": self.temperature_c(ts),
            "humidity_pct": rh,
        }

    def fields(
        self, lat_deg: np.ndarray, lon_deg: np.ndarray, ts_ms: np.ndarray
    ) -> dict[str, np.ndarray]:
        x, y = self.town.to_xy(lat_deg, lon_deg)
        return self.fields_xy(x, y, ts_ms)

    def true_value(
        self,
        metric: str,
        lat_deg: np.ndarray | float,
        lon_deg: np.ndarray | float,
        ts_ms: np.ndarray | int,
    ) -> np.ndarray:
        """The true value of one field (a reading column name) at each place and time."""
        check_field(metric)
        return self.fields(np.asarray(lat_deg), np.asarray(lon_deg), np.asarray(ts_ms))[metric]

    def cell_window_mean(
        self,
        metric: str,
        cell: int,
        window_start_ms: int,
        window_s: int,
        *,
        spatial_resolution_step: int = 2,
        time_samples: int = 30,
    ) -> float:
        """The field averaged over an H3 cell and a window: over all of it, not where bikes went.

        Space is sampled at the centres of the cell's children ``spatial_resolution_step``
        resolutions finer (49 points for 2), time at ``time_samples`` evenly spaced
        instants. Noise is averaged on energy.
        """
        check_field(metric)
        res = h3.get_resolution(cell)
        children = h3.cell_to_children(cell, min(res + spatial_resolution_step, 15))
        pts = np.array([h3.cell_to_latlng(c) for c in children])
        times = window_start_ms + (np.arange(time_samples) + 0.5) * (
            window_s * 1000.0 / time_samples
        )
        lat = np.repeat(pts[:, 0], len(times))
        lon = np.repeat(pts[:, 1], len(times))
        ts = np.tile(times.astype(np.int64), len(pts))
        return field_mean(metric, self.true_value(metric, lat, lon, ts))


_ZERO = timedelta(0)


_TILE_M = 250.0
_TILE_MARGIN_M = 600.0


def _point_segment_distance(x: np.ndarray, y: np.ndarray, seg: np.ndarray) -> np.ndarray:
    if len(seg) == 0:
        return np.full(len(x), np.inf)
    x0, y0, x1, y1 = seg.T
    dx, dy = x1 - x0, y1 - y0
    len2 = np.maximum(dx * dx + dy * dy, 1e-9)
    out = np.empty(len(x))
    chunk = 2048
    for s in range(0, len(x), chunk):
        px = x[s : s + chunk, None]
        py = y[s : s + chunk, None]
        f = np.clip(((px - x0) * dx + (py - y0) * dy) / len2, 0.0, 1.0)
        out[s : s + chunk] = np.sqrt(
            ((x0 + f * dx - px) ** 2 + (y0 + f * dy - py) ** 2).min(axis=1)
        )
    return out


def check_field(metric: str) -> None:
    if metric not in FIELDS:
        raise SimulatorConfigError(f"unknown field {metric!r}; known fields: {', '.join(FIELDS)}")


def field_mean(metric: str, values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Arithmetic mean, or the energy mean for noise: 10·log10(Σ wᵢ·10^(Lᵢ/10) / Σ wᵢ)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if metric in ENERGY_FIELDS:
        return float(10 * np.log10(np.sum(w * 10 ** (v / 10)) / np.sum(w)))
    return float(np.sum(w * v) / np.sum(w))
