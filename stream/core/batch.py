"""Enriched readings: decoded readings plus what the stream core adds.

This is what storage writes as raw readings, one row each.
"""

from __future__ import annotations

import numpy as np

from firmware_protocol.readings import READING_DTYPE

ENRICHED_DTYPE = np.dtype(
    [
        *((name, READING_DTYPE[name]) for name in READING_DTYPE.names or ()),
        ("qa_flags", "<u4"),  # stream.core.qa.QaFlag bits; 0 = clean
        ("cell", "<i8"),  # H3 cell at the finest configured resolution (int)
        ("ride_id", "<i8"),  # ride this reading belongs to (stream.core.rides)
        ("received_ms", "<i8"),  # when ingest received the frame, Unix epoch ms UTC
    ]
)


def enrich(readings: np.ndarray, received_ms: int) -> np.ndarray:
    """Copy decoded readings into an enriched array with QA, cell and ride still unset."""
    out = np.zeros(len(readings), dtype=ENRICHED_DTYPE)
    for name in READING_DTYPE.names or ():
        out[name] = readings[name]
    out["received_ms"] = received_ms
    return out


def first_by_key(rows: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    """The rows with distinct ``fields`` (the first occurrence of each kept), sorted by them."""
    if len(rows) == 0:
        return rows.copy()
    # lexsort sorts by the last key first; stable, so the first occurrence leads.
    order = np.lexsort(tuple(rows[name] for name in reversed(fields)))
    ordered = rows[order]
    keep = np.ones(len(ordered), dtype=bool)
    same = np.ones(len(ordered) - 1, dtype=bool)
    for name in fields:
        same &= ordered[name][1:] == ordered[name][:-1]
    keep[1:] = ~same
    kept: np.ndarray = ordered[keep]
    return kept
