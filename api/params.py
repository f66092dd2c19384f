"""Query parameters that need more than a type: parsed, checked, refused with the parameter named.

Each parser raises :class:`api.errors.BadParameterError` naming the parameter
and what is wrong with it; a route that has called them holds values it can
pass on as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import h3.api.basic_int as h3i

from api.errors import BadParameterError
from bikesense.settings import Settings
from storage.pseudonyms import PSEUDONYM_CHARS
from storage.selection import BBox

#: Oldest and newest instants the API accepts: outside, a request is a mistake.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
#: Kits one export may name at most.
MAX_KITS = 1000
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PSEUDONYM = re.compile(f"[a-z2-7]{{{PSEUDONYM_CHARS}}}")
# ASCII only, like _NUMBER: int() also takes other scripts' digits, "0x", "_" and
# whitespace, which would read a mistyped value as some other cell or kit.
_HEX_CELL = re.compile(r"[0-9a-fA-F]{1,16}")
_KIT_ID = re.compile(r"[0-9]{1,10}")


def parse_bbox(text: str, parameter: str = "bbox") -> BBox:
    """``west,south,east,north`` in WGS84 degrees."""
    parts = text.split(",")
    if len(parts) != 4:
        raise BadParameterError("needs four numbers: west,south,east,north", parameter=parameter)
    # Decimal numbers in ASCII only: float() also takes other scripts' digits, spaces
    # and line breaks around a number, and the text is echoed in provenance.
    if not all(_NUMBER.fullmatch(p.strip(" ")) for p in parts):
        raise BadParameterError("needs four numbers: west,south,east,north", parameter=parameter)
    west, south, east, north = (float(p) for p in parts)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise BadParameterError("coordinates must be finite numbers", parameter=parameter)
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise BadParameterError("longitudes must lie within -180..180", parameter=parameter)
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise BadParameterError("latitudes must lie within -90..90", parameter=parameter)
    if west >= east:
        raise BadParameterError(
            f"west ({west}) must be less than east ({east})", parameter=parameter
        )
    if south >= north:
        raise BadParameterError(
            f"south ({south}) must be less than north ({north})", parameter=parameter
        )
    return BBox(west=west, south=south, east=east, north=north)


def check_resolution(resolution: int | None, settings: Settings, default: int) -> int:
    if resolution is None:
        return default
    if resolution not in settings.aggregation.h3_resolutions:
        known = ", ".join(str(r) for r in settings.aggregation.h3_resolutions)
        raise BadParameterError(
            f"resolution {resolution} is not aggregated here; use one of {known}",
            parameter="resolution",
        )
    return resolution


def parse_cell(text: str, parameter: str = "cell") -> int:
    """An H3 cell index in hexadecimal."""
    if not _HEX_CELL.fullmatch(text):
        raise BadParameterError(
            "not an H3 cell index (hexadecimal, e.g. 891f1d48177ffff)", parameter=parameter
        )
    cell = int(text, 16)
    if not 0 < cell < 2**63 or not h3i.is_valid_cell(cell):
        raise BadParameterError("not a valid H3 cell index", parameter=parameter)
    return cell


def split_list(values: Sequence[str], parameter: str) -> list[str]:
    """A repeatable parameter whose items may also be comma-separated (spaces around
    them and empty items are dropped); given, it must name at least one item: a filter
    that names nothing would silently select everything."""
    items = [p.strip(" ") for v in values for p in v.split(",") if p.strip(" ")]
    if values and not items:
        raise BadParameterError(
            f"{parameter} is given but names nothing; leave it out to select all",
            parameter=parameter,
        )
    return items


def parse_kits(values: Sequence[str], parameter: str = "kit") -> tuple[int, ...]:
    """Kit ids, sorted and without repeats."""
    kits: list[int] = []
    for part in split_list(values, parameter):
        if not _KIT_ID.fullmatch(part):
            raise BadParameterError(
                f"kit ids are whole numbers (got {part!r})", parameter=parameter
            )
        kit = int(part)
        if not 0 <= kit <= 4_294_967_295:
            raise BadParameterError(f"kit id {kit} is outside 0..4294967295", parameter=parameter)
        kits.append(kit)
    if len(kits) > MAX_KITS:
        raise BadParameterError(f"at most {MAX_KITS} kits per export", parameter=parameter)
    return tuple(sorted(set(kits)))


def parse_pseudonyms(values: Sequence[str], parameter: str = "kit_pseudonym") -> frozenset[str]:
    """Kits by daily pseudonym (``storage.pseudonyms``)."""
    names = split_list(values, parameter)
    for name in names:
        if not _PSEUDONYM.fullmatch(name):
            raise BadParameterError(
                f"a kit pseudonym is {PSEUDONYM_CHARS} characters a-z and 2-7 (got {name!r})",
                parameter=parameter,
            )
    if len(names) > MAX_KITS:
        raise BadParameterError(f"at most {MAX_KITS} kits per export", parameter=parameter)
    return frozenset(names)


def default_resolution(settings: Settings) -> int:
    """The finest configured resolution up to 9 (cells of about 0.1 km²)."""
    return max(
        [r for r in settings.aggregation.h3_resolutions if r <= 9]
        or settings.aggregation.h3_resolutions
    )


@dataclass(frozen=True, slots=True)
class Place:
    """Where a time series is taken: a cell (given, or the one at a point) or a bbox."""

    resolution: int
    cell: int | None = None
    bbox: BBox | None = None


def parse_place(
    settings: Settings,
    *,
    cell: str | None,
    lat: float | None,
    lon: float | None,
    bbox: str | None,
    resolution: int | None,
) -> Place:
    """Exactly one of ``cell``, ``lat`` + ``lon`` or ``bbox``; a cell brings its resolution."""
    given = [name for name, v in (("cell", cell), ("lat", lat), ("bbox", bbox)) if v is not None]
    if (lat is None) != (lon is None):
        raise BadParameterError(
            "lat and lon go together", parameter="lon" if lon is None else "lat"
        )
    if len(given) != 1:
        raise BadParameterError(
            "give exactly one of cell, lat+lon or bbox", parameter=given[-1] if given else "cell"
        )
    default = default_resolution(settings)
    if cell is not None:
        cell_int = parse_cell(cell)
        return Place(check_resolution(h3i.get_resolution(cell_int), settings, default), cell_int)
    res = check_resolution(resolution, settings, default)
    if bbox is not None:
        return Place(res, bbox=parse_bbox(bbox))
    if lat is None or lon is None:  # ruled out above; says so to the type checker
        raise BadParameterError("lat and lon go together", parameter="lat")
    return Place(res, cell=h3i.latlng_to_cell(lat, lon, res))


def parse_since(since: datetime, now: datetime, parameter: str = "since") -> datetime:
    """A start instant, UTC (naive means UTC), between :data:`EARLIEST` and ``now``."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        since = since.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadParameterError(f"not a usable instant: {exc}", parameter=parameter) from exc
    if not EARLIEST <= since <= now:
        raise BadParameterError(
            f"must lie between {EARLIEST:%Y-%m-%d} and now", parameter=parameter
        )
    return since
