"""Geo-binning: H3 cells as ``int64`` for arrays of positions, at several resolutions.

h3 has no vectorised point-to-cell call, so the finest resolution costs one C call
per position (about 1 µs). Coarser resolutions never go back to h3: an H3 cell
index holds its resolution in bits 52–55 and one 3-bit digit per resolution
below that, and a parent is the same index with the resolution lowered and the
digits past it set to 7 ("unused"), which numpy does for a whole array at once
(H3 index format: https://h3geo.org/docs/core-library/h3Indexing).

Positions that cannot be placed (NaN, out of range) get cell 0, which is never a
valid H3 index.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3.api.basic_int as h3
import numpy as np

from stream.core.exceptions import InvalidConfigError

#: Cell value for "no position".
NO_CELL = 0

MAX_RESOLUTION = 15
_RES_SHIFT = 52
_RES_MASK = np.int64(0xF << _RES_SHIFT)
_DIGIT_BITS = 3


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if it is an H3 resolution (0–15), else raise."""
    if not 0 <= resolution <= MAX_RESOLUTION:
        msg = f"H3 resolution must be between 0 and {MAX_RESOLUTION} (got {resolution!r})"
        raise InvalidConfigError(msg)
    return int(resolution)


def check_resolutions(resolutions: Iterable[int]) -> tuple[int, ...]:
    """Sorted, de-duplicated resolutions; raises on an empty or invalid list."""
    checked = tuple(sorted({check_resolution(r) for r in resolutions}))
    if not checked:
        msg = "at least one H3 resolution is needed"
        raise InvalidConfigError(msg)
    return checked


def valid_positions(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Mask of positions that H3 can place: finite and inside WGS84 ranges."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)


def cells_at(lat_deg: np.ndarray, lon_deg: np.ndarray, resolution: int) -> np.ndarray:
    """H3 cells (``int64``) of the positions at ``resolution``; 0 where there is no position."""
    check_resolution(resolution)
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lat.shape != lon.shape:
        msg = f"latitude and longitude arrays differ in shape: {lat.shape} vs {lon.shape}"
        raise ValueError(msg)
    out = np.zeros(lat.shape, dtype=np.int64)
    ok = valid_positions(lat, lon)
    if ok.any():
        cell_of = h3.latlng_to_cell
        out[ok] = [
            cell_of(a, b, resolution)
            for a, b in zip(lat[ok].tolist(), lon[ok].tolist(), strict=True)
        ]
    return out


def cell_resolutions(cells: np.ndarray) -> np.ndarray:
    """Resolution of each cell, read from its index bits (meaningless for cell 0)."""
    c = np.asarray(cells, dtype=np.int64)
    return ((c & _RES_MASK) >> _RES_SHIFT).astype(np.int8)


def parent_cells(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Parents of ``cells`` at ``resolution``, by bit operations; 0 stays 0.

    Every non-zero cell must be at ``resolution`` or finer.
    """
    check_resolution(resolution)
    c = np.asarray(cells, dtype=np.int64)
    present = c != NO_CELL
    if present.any() and int(cell_resolutions(c[present]).min()) < resolution:
        msg = f"cannot take parents at resolution {resolution} of coarser cells"
        raise InvalidConfigError(msg)
    unused_digits = np.int64((1 << (_DIGIT_BITS * (MAX_RESOLUTION - resolution))) - 1)
    parents = (c & ~_RES_MASK) | np.int64(resolution << _RES_SHIFT) | unused_digits
    return np.where(present, parents, np.int64(NO_CELL))


def cells_by_resolution(
    lat_deg: np.ndarray, lon_deg: np.ndarray, resolutions: Iterable[int]
) -> dict[int, np.ndarray]:
    """Cells at every resolution: h3 once at the finest, bit operations for the rest."""
    checked = check_resolutions(resolutions)
    finest = cells_at(lat_deg, lon_deg, checked[-1])
    out = {checked[-1]: finest}
    for r in checked[:-1]:
        out[r] = parent_cells(finest, r)
    return out
