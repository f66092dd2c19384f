"""Privacy zones and ride trimming: which readings must never be stored (docs/design.md decision 4).

Mail carriers start and end their rounds at a depot, and some live on their
round. Readings inside a *privacy zone* (a circle or a polygon: depots,
carriers' homes, whatever the municipality lists) are withheld before anything
is stored, and so are the first :attr:`PrivacyConfig.trim_start_s` seconds of
every ride: a track that leaves a zone does not point back into it.

The last :attr:`PrivacyConfig.trim_end_s` seconds of every ride are withheld
too, which needs waiting: a reading is known not to be among its ride's last
seconds only once the same ride has a reading ``trim_end_s`` later, and known to
be among them once the kit has started a newer ride. :func:`ride_end_fates`
sorts readings into *store* (safe now), *hold* (not known yet) and *drop*
(among the last seconds of a finished ride); the runtime keeps held readings in
a holding table of its own transaction (``storage.held``), so that acknowledging
their frames loses nothing, and settles them as the kit's later readings come.

Pure: numpy in, boolean masks out. Positions are WGS84 degrees; a reading
without a position (NaN) is in no zone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_protocol import MessageType, RemoteProtocolError, peek_header
from firmware_protocol.wire import I32_ABSENT, OFFSET_RECORDS, RECORD_BYTES, RECORD_DTYPE
from stream.core.batch import first_by_key
from stream.core.exceptions import InvalidConfigError
from stream.core.rides import ride_starts_ms
from stream.core.state import KitStates

#: Mean Earth radius (IUGG), metres: circles are a few hundred metres, so the
#: spherical model's error (< 0.5 %) is far below GPS error on a bike.
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class CircleZone:
    """Everything within ``radius_m`` metres of a point."""

    name: str
    lat_deg: float
    lon_deg: float
    radius_m: float

    def __post_init__(self) -> None:
        if not (-90 <= self.lat_deg <= 90 and -180 <= self.lon_deg <= 180):
            msg = (
                f"privacy zone {self.name!r}: centre ({self.lat_deg}, {self.lon_deg})"
                " is not a WGS84 position"
            )
            raise InvalidConfigError(msg)
        if not 0 < self.radius_m <= 50_000:
            msg = (
                f"privacy zone {self.name!r}: radius must be 0 < r <= 50000 m (got {self.radius_m})"
            )
            raise InvalidConfigError(msg)

    def contains(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        # Haversine distance, vectorised.
        lat1, lat2 = np.radians(self.lat_deg), np.radians(lat_deg)
        dlat = lat2 - lat1
        dlon = np.radians(lon_deg - self.lon_deg)
        a = np.sin(dlat / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
        distance_m = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
        inside: np.ndarray = distance_m <= self.radius_m
        return inside


@dataclass(frozen=True, slots=True)
class PolygonZone:
    """A simple polygon (one ring, no holes) of ``(lat_deg, lon_deg)`` vertices.

    Edges are straight in latitude/longitude, which at the size of a depot or a
    block is indistinguishable from straight on the ground. The ring may be
    closed (last vertex = first) or not.
    """

    name: str
    vertices: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        ring = tuple((float(a), float(b)) for a, b in self.vertices)
        if len(ring) > 1 and ring[0] == ring[-1]:
            ring = ring[:-1]
        if len(ring) < 3:
            msg = f"privacy zone {self.name!r}: a polygon needs at least 3 distinct vertices"
            raise InvalidConfigError(msg)
        if any(not (-90 <= a <= 90 and -180 <= b <= 180) for a, b in ring):
            msg = f"privacy zone {self.name!r}: a vertex is not a WGS84 position"
            raise InvalidConfigError(msg)
        object.__setattr__(self, "vertices", ring)

    def contains(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        # Even-odd ray casting along +lon, all edges against all points at once.
        ring = np.asarray(self.vertices, dtype=np.float64)
        y1, x1 = ring[:, 0], ring[:, 1]
        y2, x2 = np.roll(y1, -1), np.roll(x1, -1)
        y, x = np.asarray(lat_deg)[:, None], np.asarray(lon_deg)[:, None]
        straddles = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        crossings = straddles & (x < x_cross)
        inside: np.ndarray = (np.count_nonzero(crossings, axis=1) % 2) == 1
        return inside


Zone = CircleZone | PolygonZone


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """What the core withholds; the runtime builds it from the operator's settings."""

    zones: tuple[Zone, ...] = ()
    #: Readings this long after the start of their ride are withheld.
    trim_start_s: float = 0.0
    #: Readings this long before the end of their ride are withheld (held until known).
    trim_end_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("trim_start_s", "trim_end_s"):
            value = getattr(self, name)
            if not 0 <= value <= 3600:
                msg = f"{name} must be between 0 and 3600 s (got {value!r})"
                raise InvalidConfigError(msg)

    @property
    def active(self) -> bool:
        return bool(self.zones) or self.trim_start_s > 0 or self.trim_end_s > 0


def in_zones(lat_deg: np.ndarray, lon_deg: np.ndarray, zones: Sequence[Zone]) -> np.ndarray:
    """True for each position inside at least one zone; NaN positions are in none."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    inside = np.zeros(len(lat), dtype=bool)
    placed = np.isfinite(lat) & np.isfinite(lon)
    if not zones or not placed.any():
        return inside
    where = np.flatnonzero(placed)
    hits = np.zeros(len(where), dtype=bool)
    for zone in zones:
        hits |= zone.contains(lat[where], lon[where])
    inside[where] = hits
    return inside


def in_ride_start(ts_ms: np.ndarray, ride_ids: np.ndarray, trim_start_s: float) -> np.ndarray:
    """True for readings less than ``trim_start_s`` after their ride's start.

    The start is the one the ride id encodes (to the second, the earliest
    reading seen when the ride began); a late reading from before it is
    trimmed as well.
    """
    if trim_start_s <= 0:
        return np.zeros(len(ts_ms), dtype=bool)
    since_start_ms = np.asarray(ts_ms, dtype=np.int64) - ride_starts_ms(ride_ids)
    trimmed: np.ndarray = since_start_ms < int(trim_start_s * 1000)
    return trimmed


#: The fates of :func:`ride_end_fates`.
STORE, HOLD, DROP = 0, 1, 2


def ride_end_fates(
    kit_ids: np.ndarray,
    ride_ids: np.ndarray,
    ts_ms: np.ndarray,
    states: KitStates,
    trim_end_s: float,
) -> np.ndarray:
    """STORE, HOLD or DROP (int8) for each reading, under end-of-ride trimming.

    ``states`` are the kit states after every given reading was processed (their
    rides hold each ride's latest reading so far). A reading at ``t`` of ride
    ``R`` is

    * STORE when ``R`` has a reading at ``t + trim_end_s`` or later: it is not
      among the ride's last seconds, whatever comes next;
    * DROP when it is not, but the kit has started a newer ride since ``R``
      (rides are split on gaps, so ``R`` is over), or ``R`` is no longer
      remembered (too old, or the state was lost: more is dropped, never less);
    * HOLD otherwise: ``R`` is the kit's latest ride and may go on.

    With ``trim_end_s`` 0 every reading is STORE.
    """
    n = len(ts_ms)
    fates = np.full(n, STORE, dtype=np.int8)
    if trim_end_s <= 0 or n == 0:
        return fates
    trim_ms = round(trim_end_s * 1000)
    kits = np.asarray(kit_ids, dtype=np.int64)
    rides = np.asarray(ride_ids, dtype=np.int64)
    pairs = np.unique(np.stack([kits, rides], axis=1), axis=0, return_inverse=True)
    unique_pairs, inverse = pairs[0], pairs[1].reshape(-1)
    ride_end = np.empty(len(unique_pairs), dtype=np.int64)
    ride_over = np.empty(len(unique_pairs), dtype=bool)
    for i, (kit, ride) in enumerate(unique_pairs.tolist()):
        state = states.get(kit)
        spans = state.rides if state is not None else ()
        span = next((s for s in spans if s.ride_id == ride), None)
        if span is None:
            ride_end[i], ride_over[i] = np.iinfo(np.int64).min // 2, True
            continue
        ride_end[i] = span.end_ms
        ride_over[i] = any(other.start_ms > span.end_ms for other in spans)
    safe = np.asarray(ts_ms, dtype=np.int64) + trim_ms <= ride_end[inverse]
    fates[~safe & ride_over[inverse]] = DROP
    fates[~safe & ~ride_over[inverse]] = HOLD
    return fates


@dataclass(frozen=True, slots=True)
class Settled:
    """What end-of-ride trimming made of held readings plus a new batch."""

    store: np.ndarray  # readings safe to store now (ENRICHED_DTYPE, key order)
    hold: np.ndarray  # readings to keep held until their ride decides
    trimmed: int  # readings dropped as the last seconds of a finished ride


_IDENTITY = ("kit_id", "boot_id", "seq", "idx")


def settle_ride_ends(
    held: np.ndarray, batch: np.ndarray, states: KitStates, trim_end_s: float
) -> Settled:
    """Sort the held readings of a batch's kits and the batch's own readings by fate.

    ``held`` are the readings this function told the caller to hold before (for
    the kits of ``batch``, or a superset); ``states`` the kit states after
    ``batch``. A reading both held and in the batch (its frame delivered again)
    counts once.
    """
    # The first of equal identities, the held copy, is kept.
    rows = first_by_key(np.concatenate([held, batch]) if len(held) else batch, _IDENTITY)
    fates = ride_end_fates(rows["kit_id"], rows["ride_id"], rows["ts_ms"], states, trim_end_s)
    return Settled(rows[fates == STORE], rows[fates == HOLD], int(np.count_nonzero(fates == DROP)))


def payload_in_zones(payload: bytes, zones: Sequence[Zone]) -> bool:
    """Whether the bytes of a readings frame hold a position inside a zone.

    For rejected frames: their raw bytes are kept for diagnosis, unless they
    carry a position in a zone. Positions are read straight from the records
    (docs/protocol.md), without the MAC, checksum or value checks, so that a
    forged, truncated or partly invalid frame is caught too. Bytes without a
    readings header hold no position we could read.
    """
    if not zones:
        return False
    try:
        header = peek_header(payload)
    except RemoteProtocolError:
        return False
    if header.message_type != MessageType.READINGS:
        return False
    n = min(header.count, (len(payload) - OFFSET_RECORDS) // RECORD_BYTES)
    if n <= 0:
        return False
    records = np.frombuffer(payload, RECORD_DTYPE, n, OFFSET_RECORDS)
    lat_e7, lon_e7 = records["lat_e7"], records["lon_e7"]
    placed = (lat_e7 != I32_ABSENT) & (lon_e7 != I32_ABSENT)
    # Scale as the decoder does (SCALED_FIELDS: 1e-7 degree).
    return bool(in_zones(lat_e7[placed] / 1e7, lon_e7[placed] / 1e7, zones).any())


# Configuration files ------------------------------------------------------------------------


def zones_from_json(document: Mapping[str, Any] | Sequence[Any]) -> tuple[Zone, ...]:
    """Zones from a GeoJSON FeatureCollection, or from a plain list of zone objects.

    GeoJSON (coordinates are ``[lon, lat]`` as RFC 7946 says): a ``Polygon``
    feature is a polygon zone (outer ring only); a ``Point`` feature with a
    ``radius_m`` property is a circle. Plain list items are
    ``{"name", "lat_deg", "lon_deg", "radius_m"}`` or ``{"name", "polygon":
    [[lat, lon], ...]}``.
    """
    if isinstance(document, Mapping):
        if document.get("type") != "FeatureCollection":
            msg = "privacy zones: expected a GeoJSON FeatureCollection or a list of zones"
            raise InvalidConfigError(msg)
        return tuple(_zone_from_feature(i, f) for i, f in enumerate(document.get("features", [])))
    return tuple(_zone_from_item(i, item) for i, item in enumerate(document))


def zones_from_text(text: str, *, source: str = "privacy zones") -> tuple[Zone, ...]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{source}: not JSON ({exc})"
        raise InvalidConfigError(msg) from exc
    try:
        return zones_from_json(document)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidConfigError):
            raise InvalidConfigError(f"{source}: {exc}") from exc
        msg = f"{source}: malformed zone ({exc!r})"
        raise InvalidConfigError(msg) from exc


def _zone_from_feature(i: int, feature: Mapping[str, Any]) -> Zone:
    props = feature.get("properties") or {}
    name = str(props.get("name", f"zone {i}"))
    geometry = feature["geometry"]
    kind = geometry["type"]
    if kind == "Point":
        lon, lat = geometry["coordinates"][:2]
        if "radius_m" not in props:
            msg = f"privacy zone {name!r}: a Point needs a radius_m property"
            raise InvalidConfigError(msg)
        return CircleZone(name, float(lat), float(lon), float(props["radius_m"]))
    if kind == "Polygon":
        ring = geometry["coordinates"][0]
        return PolygonZone(name, tuple((float(p[1]), float(p[0])) for p in ring))
    msg = f"privacy zone {name!r}: geometry {kind!r} is not supported (Point or Polygon)"
    raise InvalidConfigError(msg)


def _zone_from_item(i: int, item: Mapping[str, Any]) -> Zone:
    name = str(item.get("name", f"zone {i}"))
    if "polygon" in item:
        return PolygonZone(name, tuple((float(p[0]), float(p[1])) for p in item["polygon"]))
    return CircleZone(name, float(item["lat_deg"]), float(item["lon_deg"]), float(item["radius_m"]))
