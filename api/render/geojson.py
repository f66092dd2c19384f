"""GeoJSON of raw-reading exports: one FeatureCollection, streamed.

The header carries the provenance and the columns with their units; the
features come from the database already formatted (``storage.exports``), one
block per slice, whole features separated by ``",\\n"``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from api.provenance import Provenance
from api.render.columns import ExportColumn
from storage.exports import ExportBlock


async def geojson_text_stream(
    columns: Sequence[ExportColumn], provenance: Provenance, blocks: AsyncIterator[ExportBlock]
) -> AsyncIterator[bytes]:
    """Features from the database into a FeatureCollection: separators go between
    features, never after the last."""
    head = {
        "type": "FeatureCollection",
        "bikesense": {**provenance, "columns": [{"name": c.name, "unit": c.unit} for c in columns]},
    }
    yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "features": [\n'
    first = True
    async for block in blocks:
        # Blocks hold whole features separated by ",\n" (storage.exports), none around them.
        if not first:
            yield b",\n"
        yield block.data
        first = False
    yield b"\n]}\n"
