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


#: A reading's fields lead an enriched row, at the same offsets: its bytes are the first
#: ``READING_DTYPE.itemsize`` of the row.
_SAME_LEADING_BYTES = all(
    ENRICHED_DTYPE.fields[name] == spec  # type: ignore[index]
    for name, spec in (READING_DTYPE.fields or {}).items()
)


def enrich(readings: np.ndarray, received_ms: int) -> np.ndarray:
    """Copy decoded readings into an enriched array with QA, cell and ride still unset."""
    n = len(readings)
    out = np.zeros(n, dtype=ENRICHED_DTYPE)
    if _SAME_LEADING_BYTES and readings.dtype == READING_DTYPE and readings.flags.c_contiguous:
        # One copy of bytes instead of a pass over every row per field.
        width = READING_DTYPE.itemsize
        rows = out.view(np.uint8).reshape(n, ENRICHED_DTYPE.itemsize)
        rows[:, :width] = readings.view(np.uint8).reshape(n, width)
    else:
        for name in READING_DTYPE.names or ():
            out[name] = readings[name]
    out["received_ms"] = received_ms
    return out


def first_by_key(rows: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    """The rows with distinct ``fields`` (the first occurrence of each kept), sorted by them."""
    if len(rows) == 0:
        return rows.copy()
    keys = sort_keys(rows, fields)
    # lexsort sorts by the last key first; stable, so the first occurrence leads.
    order = np.lexsort(keys[::-1])
    keep = np.ones(len(order), dtype=bool)
    same = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        ordered = key[order]
        same &= ordered[1:] == ordered[:-1]
    keep[1:] = ~same
    kept: np.ndarray = rows[order[keep]]
    return kept


def sort_keys(rows: np.ndarray, fields: tuple[str, ...]) -> list[np.ndarray]:
    """Arrays that sort and compare as ``rows``' ``fields`` do, fewer of them: neighbouring
    integer and boolean fields packed into one ``uint64`` while their bits fit (a
    reading's identity, kit 32 + boot 32 and seq 32 + index 16 bits, is two keys, not
    four; each key is one more pass of the sort). Other fields stay keys of their own."""
    return pack_keys([rows[name] for name in fields])


def pack_keys(columns: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`sort_keys` of arrays: a signed integer packs with its sign bit flipped
    (then it orders as unsigned), a boolean as 8 bits."""
    keys: list[np.ndarray] = []
    packed: np.ndarray | None = None
    bits = 0
    for column in columns:
        if column.dtype.kind not in "uib":
            if packed is not None:
                keys.append(packed)
            keys.append(column)
            packed, bits = None, 0
            continue
        width = 8 * column.dtype.itemsize
        word = column.view(f"u{column.dtype.itemsize}").astype(np.uint64)
        if column.dtype.kind == "i":
            word ^= np.uint64(1 << (width - 1))
        if packed is not None and bits + width <= 64:
            packed = (packed << np.uint64(width)) | word
            bits += width
            continue
        if packed is not None:
            keys.append(packed)
        packed, bits = word, width
    if packed is not None:
        keys.append(packed)
    return keys
