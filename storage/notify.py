"""The live-update notification: what the stream sends after a committed batch, what the API reads.

The runtime sends :func:`notify_payload`'s text on :data:`CHANNEL` with
``SELECT pg_notify(...)`` inside the batch's own transaction, so a notification
is delivered exactly when its aggregates are visible; the API LISTENs
(api/live.py) and turns each payload into a live event. Both sides import this
module, which sits below them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CHANNEL = "bikesense_aggregates"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well under.
MAX_PAYLOAD_BYTES = 7_500
PAYLOAD_VERSION = 1


def notify_payload(
    *,
    metrics: Iterable[str],
    resolutions: Iterable[int],
    windows: Iterable[tuple[int, int]],
    cells: Iterable[int] = (),
) -> str:
    """The JSON text to NOTIFY on :data:`CHANNEL` after a batch of aggregates is committed.

    ``metrics``: API metric names (``"pm25"``…); ``resolutions``: H3 resolutions
    written; ``windows``: distinct (window_s, window_start_ms) pairs written;
    ``cells``: H3 cells touched (ints), at any resolution. Cells are dropped
    from the end (and ``"cells_truncated": true`` set) to keep the payload under
    :data:`MAX_PAYLOAD_BYTES`; windows are summarised by their range if needed.

    Example: ``{"v": 1, "metrics": ["pm25"], "resolutions": [9],
    "windows": [[3600, 1700000000000]], "cells": ["891f1d48177ffff"]}``
    """
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "metrics": sorted(set(metrics)),
        "resolutions": sorted({int(r) for r in resolutions}),
        "windows": sorted({(int(w), int(s)) for w, s in windows}),
    }
    if len(body["windows"]) > 64:
        starts = [s for _, s in body["windows"]]
        body["windows_range_ms"] = [min(starts), max(starts)]
        body["windows"] = []
    cell_list = [format(int(c), "x") for c in dict.fromkeys(cells)]
    body["cells"] = cell_list
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        body["cells_truncated"] = True
        # Each cell costs ~18 bytes in the text: cut to fit, then trim any rest.
        budget = MAX_PAYLOAD_BYTES - len(json.dumps({**body, "cells": []}).encode())
        cell_list = cell_list[: max(budget // 18, 0)]
        while True:
            body["cells"] = cell_list
            text = json.dumps(body, separators=(",", ":"))
            if len(text.encode()) <= MAX_PAYLOAD_BYTES:
                break
            cell_list = cell_list[:-8]
    return text
