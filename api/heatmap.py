"""A heat-map tile of one metric: the cells it draws, their colour bands, its ETag.

:func:`read_tile` picks the H3 resolution for the zoom and the window size for
the range, reads the cell means the caller may see (:func:`api.privacy.selection`)
in the tile and a margin around it, and classifies them into bands. The ETag
is a hash of exactly what :func:`api.render.tile_png.render_tile` draws from,
so a revalidation that matches is answered before anything is drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from api.aggregates import align, choose_window, tile_bands
from api.bands import MetricScale
from api.privacy import allowed_windows, selection
from api.render.tile_png import TileBox, average_edge_m, render_tile, resolution_for_zoom
from api.roles import Principal
from bikesense.policy import PrivacyPolicy
from bikesense.settings import Settings
from storage.cell_means import cell_means
from storage.corrected_windows import acorrected_versions
from storage.selection import BBox
from stream.core.partials import Metric

#: Part of every tile's ETag: change it whenever render_tile draws the same input
#: differently, so that caches do not keep tiles of the old drawing.
TILE_STYLE = "1"


@dataclass(frozen=True, slots=True)
class Tile:
    box: TileBox
    resolution: int
    window_s: int
    start: datetime  # the range covered, widened to whole windows
    end: datetime
    cells: np.ndarray  # H3 cells
    bands: np.ndarray  # band index per cell, NO_BAND where not drawn
    scale: MetricScale
    etag: str
    corrected: bool = False
    versions: tuple[str, ...] = ()  # of the corrections behind a corrected tile

    def png(self) -> bytes:
        return render_tile(self.box, self.cells, self.bands, self.scale)


def tile_etag(
    z: int,
    x: int,
    y: int,
    cells: np.ndarray,
    bands: np.ndarray,
    scale: MetricScale,
    versions: tuple[str, ...] | None = None,
) -> str:
    """A strong ETag of the tile ``render_tile`` draws from these inputs (it is a pure
    function of them): the tile, the cells and their bands in cell order, the scale;
    for a corrected tile also the corrections' versions, which its headers name."""
    order = np.argsort(cells, kind="stable")
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{TILE_STYLE}|{z}/{x}/{y}|{scale!r}|".encode())
    if versions is not None:
        digest.update(("corrected:" + ",".join(versions) + "|").encode())
    digest.update(np.ascontiguousarray(cells[order], dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(bands[order], dtype="<i2").tobytes())
    return f'"{digest.hexdigest()}"'


async def read_tile(
    conn: psycopg.AsyncConnection[Any],
    box: TileBox,
    metric: Metric,
    scale: MetricScale,
    *,
    principal: Principal,
    settings: Settings,
    policy: PrivacyPolicy,
    start: datetime,
    end: datetime,
    corrected: bool = False,
) -> Tile:
    """What the caller may see of ``metric`` in ``box`` over ``[start, end)``, raw or
    corrected values (the same privacy rules)."""
    resolution = resolution_for_zoom(
        box.z, (box.south + box.north) / 2, settings.aggregation.h3_resolutions
    )
    window_s = choose_window((end - start).total_seconds(), allowed_windows(principal, policy))
    start, end = align(start, end, window_s)
    sel = selection(
        principal,
        policy,
        metric=metric,
        resolution=resolution,
        window_s=window_s,
        start=start,
        end=end,
        corrected=corrected,
    )
    # Cells whose centre lies outside the tile can still cover its edge.
    margin_deg = 2 * average_edge_m(resolution) / 111_320
    lon_margin = margin_deg / max(np.cos(np.radians(max(abs(box.south), abs(box.north)))), 0.01)
    cells = await cell_means(
        conn,
        sel,
        BBox(
            west=max(box.west - lon_margin, -180.0),
            south=max(box.south - margin_deg, -90.0),
            east=min(box.east + lon_margin, 180.0),
            north=min(box.north + margin_deg, 90.0),
        ),
    )
    bands = tile_bands(cells, metric, scale, settings.api.min_readings)
    versions = tuple(await acorrected_versions(conn, metric, start, end)) if corrected else None
    return Tile(
        box=box,
        resolution=resolution,
        window_s=window_s,
        start=start,
        end=end,
        cells=cells["cell"],
        bands=bands,
        scale=scale,
        etag=tile_etag(box.z, box.x, box.y, cells["cell"], bands, scale, versions),
        corrected=corrected,
        versions=versions or (),
    )
