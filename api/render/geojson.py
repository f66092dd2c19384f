"""GeoJSON of raw-reading exports: one FeatureCollection, streamed.

The header carries the provenance and the columns with their units; the
features come from the database already formatted (``storage.exports``), one
block per slice, whole features separated by ``",\\n"``. After ``features``,
on the file's last line, the member ``bikesense_complete`` states the rows and
the SHA-256 of every byte before that line (:mod:`api.render.completion`): a
file cut short is not JSON, and lacks it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from api.provenance import Provenance
from api.render.columns import ExportColumn
from api.render.completion import (
    COMPLETE_KEY,
    CORRECTIONS_KEY,
    Completion,
    CorrectionsUsed,
    check_lines,
)
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
    done = Completion()
    opening = json.dumps(head, ensure_ascii=False)[:-1] + ', "features": [\n'
    yield await done.wrote(opening.encode())
    first = True
    used = CorrectionsUsed()
    async for block in blocks:
        # Blocks hold whole features separated by ",\n" (storage.exports), none around them.
        check_lines(block.data, block.rows, separators=block.rows - 1)
        used.add(block.corrections)
        if not first:
            yield await done.wrote(b",\n")
        yield await done.wrote(block.data, block.rows)
        first = False
    yield await done.wrote(b"\n],\n")
    if any(c.kind == "version" for c in columns):
        yield await done.wrote(f'"{CORRECTIONS_KEY}": {used.json()},\n'.encode())
    complete = {"rows": done.rows, "sha256": done.sha256}
    yield f'"{COMPLETE_KEY}": {json.dumps(complete)}}}\n'.encode()
