"""The holding table of end-of-ride trimming: readings not yet known to be storable.

``stream.core.privacy.ride_end_fates`` decides; this module keeps the readings
it cannot decide yet (migrations/0005_readings_held.sql says why a table). Both
calls run inside the caller's transaction, the one that writes the batch, so a
reading is always in exactly one place: in a frame not yet acknowledged, in
``readings_held``, in ``readings``, or trimmed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from storage import copybin
from storage.readings import READING_COLUMNS, enriched_from_rows, reading_values
from stream.core.batch import ENRICHED_DTYPE

#: The held rows' columns, in table order: a reading as the writer sends it, without
#: the staging row number. Absent values stay NaN / -1 / 0 (no NULLs).
HELD_COLUMNS = READING_COLUMNS[1:]
_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c.name) for c in HELD_COLUMNS)
_COPY_IN = sql.SQL("COPY readings_held ({}) FROM STDIN (FORMAT BINARY)").format(_COLUMN_LIST)


def take_held(conn: psycopg.Connection[Any], kit_ids: Iterable[int]) -> np.ndarray:
    """Remove and return (``ENRICHED_DTYPE``, key order) the held readings of ``kit_ids``.

    The caller puts back, with :func:`hold`, whatever must stay held; both in
    one transaction, the rows are locked against another writer meanwhile.
    """
    kits = sorted({int(k) for k in kit_ids})
    if not kits:
        return np.zeros(0, dtype=ENRICHED_DTYPE)
    statement = sql.SQL(
        "COPY (DELETE FROM readings_held WHERE kit_id = ANY({}::bigint[]) RETURNING {})"
        " TO STDOUT (FORMAT BINARY)"
    ).format(sql.Literal(kits), _COLUMN_LIST)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        payload = b"".join(bytes(block) for block in copy)
    body = payload[len(copybin.HEADER) : -len(copybin.TRAILER)]
    out = enriched_from_rows(copybin.decode_rows(HELD_COLUMNS, body))
    order = np.lexsort(tuple(out[k] for k in ("idx", "seq", "boot_id", "kit_id")))
    held: np.ndarray = out[order]
    return held


def hold(conn: psycopg.Connection[Any], rows: np.ndarray) -> int:
    """Keep ``rows`` (``ENRICHED_DTYPE``, distinct keys) until their ride decides; how many."""
    if len(rows) == 0:
        return 0
    with conn.cursor() as cur, cur.copy(_COPY_IN) as copy:
        copy.write(copybin.encode(HELD_COLUMNS, reading_values(rows), len(rows)))
    return len(rows)


def held_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM readings_held").fetchone()
    return int(row[0]) if row else 0


def expire_held(conn: psycopg.Connection[Any], older_than: datetime) -> int:
    """Delete held readings received before ``older_than``: their kits never went on
    (retired, or switched off for good); a ride that old cannot be continued
    (``RideConfig.memory_s``). Returns how many."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (e.g. datetime.now(UTC) - ...)")
    with conn.transaction():
        cur = conn.execute("DELETE FROM readings_held WHERE received_at < %s", (older_than,))
    return cur.rowcount
