"""Merging partials: the one operation storage and the API rely on to combine them.

Counts, sums, energies, durations and histograms add; min, max and LAmax take
the extreme, ignoring NaN. It is associative and commutative, which is what lets
late data of any age, redelivered batches split differently, and roll-ups to
coarser windows all land on the same numbers (docs/design.md decision 1).
Presence rows of one key merge the same way: their metric bits OR, their
readings and noise energy add (:func:`merge_presence`).
"""

from __future__ import annotations

import numpy as np

from stream.core.exceptions import InvalidBatchError
from stream.core.partials import (
    PARTIAL_DTYPE,
    PARTIAL_KEY_FIELDS,
    PRESENCE_DTYPE,
    PRESENCE_KEY_FIELDS,
)


def group_starts(*keys: np.ndarray) -> np.ndarray:
    """First index of each run of equal keys in arrays already sorted by those keys."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for key in keys:
            change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def merge_partials(partials: np.ndarray) -> np.ndarray:
    """Combine partials with equal keys; the result is unique per key and sorted by it."""
    if partials.dtype != PARTIAL_DTYPE:
        msg = f"merge_partials needs an array of PARTIAL_DTYPE, got {partials.dtype}"
        raise InvalidBatchError(msg)
    if len(partials) == 0:
        return partials.copy()
    order = np.lexsort(tuple(partials[k] for k in reversed(PARTIAL_KEY_FIELDS)))
    p = partials[order]
    firsts = group_starts(*(p[k] for k in PARTIAL_KEY_FIELDS))
    out = np.zeros(len(firsts), dtype=PARTIAL_DTYPE)
    for key in PARTIAL_KEY_FIELDS:
        out[key] = p[key][firsts]
    for name in ("n", "sum", "sumsq", "energy", "duration_s", "hist"):
        out[name] = np.add.reduceat(p[name], firsts, axis=0)
    out["min"] = np.fmin.reduceat(p["min"], firsts)
    out["max"] = np.fmax.reduceat(p["max"], firsts)
    out["lamax_db"] = np.fmax.reduceat(p["lamax_db"], firsts)
    return out


def merge_presence(presence: np.ndarray) -> np.ndarray:
    """Combine presence rows with equal keys (metrics OR, readings and noise energy
    add); the result is unique per key and sorted by it."""
    if presence.dtype != PRESENCE_DTYPE:
        msg = f"merge_presence needs an array of PRESENCE_DTYPE, got {presence.dtype}"
        raise InvalidBatchError(msg)
    if len(presence) == 0:
        return presence.copy()
    order = np.lexsort(tuple(presence[k] for k in reversed(PRESENCE_KEY_FIELDS)))
    p = presence[order]
    firsts = group_starts(*(p[k] for k in PRESENCE_KEY_FIELDS))
    out = np.zeros(len(firsts), dtype=PRESENCE_DTYPE)
    for key in PRESENCE_KEY_FIELDS:
        out[key] = p[key][firsts]
    out["metrics"] = np.bitwise_or.reduceat(p["metrics"], firsts)
    out["readings"] = np.add.reduceat(p["readings"], firsts)
    out["noise_energy"] = np.add.reduceat(p["noise_energy"], firsts)
    return out
