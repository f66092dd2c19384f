"""Readings whose aggregates wait: the durable side of aggregates merged over several batches.

The embedded runtime may leave a batch's aggregates out of the transaction that
stores its readings and merge them, with those of the batches after it, in a
later transaction (``storage.deferred``, docs/storage.md "Aggregates merged over
several batches"). docs/design.md decision 2 must stay true meanwhile: a crash
may neither lose nor double an aggregate. So the transaction that stores the
readings also stores, with :func:`record`, one ``aggregate_backlog`` row naming
exactly the readings that were new in it (migrations/0115_aggregate_backlog.sql);
the transaction that merges their aggregates deletes that row with
:func:`settle`, and merges only the readings of rows it deleted. What a crash
leaves behind, :func:`recover` deletes, reads back from ``readings`` and
returns, for the caller to aggregate and merge in the same transaction.

A row is deleted once, so its readings are merged once: two transactions that
try (a writer's and another process's recovery) serialise on the row's lock,
and the second finds it gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from storage import copybin
from storage.readings import KEY_FIELDS, TABLE_COLUMNS, as_written, enriched_from_rows
from stream.core.batch import ENRICHED_DTYPE

#: How a backlog row stores its readings' keys (the readings' own numpy types, packed).
KEY_DTYPE = np.dtype([(name, ENRICHED_DTYPE[name]) for name in KEY_FIELDS])

_RECORD = b"INSERT INTO aggregate_backlog (readings, keys) VALUES (%s, %s) RETURNING id"
# Rows are locked in id order first, so that two transactions deleting overlapping sets
# (a writer settling, another process recovering) wait for each other, never deadlock.
_SETTLE = (
    b"DELETE FROM aggregate_backlog WHERE id IN (SELECT id FROM aggregate_backlog"
    b" WHERE id = ANY(%s) ORDER BY id FOR UPDATE) RETURNING id"
)
_TAKE_ALL = (
    b"DELETE FROM aggregate_backlog WHERE id IN (SELECT id FROM aggregate_backlog"
    b" ORDER BY id FOR UPDATE) RETURNING id, keys"
)


# The readings of the given keys, absent values as their markers (as the writer had
# them), for storage.readings.enriched_from_rows.
_READ_BACK = (
    sql.SQL(
        "COPY (SELECT {columns} FROM readings r JOIN unnest("
        "%(kit_id)s::bigint[], %(boot_id)s::bigint[], %(seq)s::bigint[], %(idx)s::integer[],"
        " %(ts_ms)s::bigint[]) AS k (kit_id, boot_id, seq, idx, ts_ms)"
        " ON r.kit_id = k.kit_id AND r.boot_id = k.boot_id AND r.seq = k.seq AND r.idx = k.idx"
        " AND r.ts = 'epoch'::timestamptz + k.ts_ms * interval '1 millisecond')"
        " TO STDOUT (FORMAT BINARY)"
    )
    .format(columns=sql.SQL(", ").join(as_written(c) for c in TABLE_COLUMNS))
    .as_string()
    .encode()
)


def keys_of(rows: np.ndarray) -> bytes:
    """The keys of ``rows`` (``ENRICHED_DTYPE``) as a backlog row stores them."""
    keys = np.empty(len(rows), dtype=KEY_DTYPE)
    for name in KEY_FIELDS:
        keys[name] = rows[name]
    return keys.tobytes()


def record(conn: psycopg.Connection[Any], new_rows: np.ndarray) -> int:
    """Note in the caller's transaction that ``new_rows``, new in it, wait for their
    aggregates; returns the backlog row's id, for :func:`settle`."""
    if len(new_rows) == 0:
        raise ValueError("a backlog row names at least one reading")
    row = conn.execute(_RECORD, (len(new_rows), keys_of(new_rows))).fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row
    return int(row[0])


def settle(conn: psycopg.Connection[Any], ids: Sequence[int]) -> set[int]:
    """Delete the backlog rows ``ids`` in the caller's transaction, which merges their
    readings' aggregates; returns the ids it deleted. An id missing from the answer
    was settled by another transaction (a recovery): its readings must not be merged
    here."""
    if not ids:
        return set()
    return {int(r[0]) for r in conn.execute(_SETTLE, (list(ids),))}


def recover(conn: psycopg.Connection[Any]) -> np.ndarray:
    """Delete every backlog row in the caller's transaction and return the readings
    they name (``ENRICHED_DTYPE``, as the writer stored them): the caller merges their
    aggregates in the same transaction. Rows another transaction is settling are
    waited for, and then gone. A reading that retention dropped meanwhile (a backlog
    older than the raw retention) is not returned: there is nothing left to merge."""
    taken = conn.execute(_TAKE_ALL).fetchall()
    if not taken:
        return np.zeros(0, dtype=ENRICHED_DTYPE)
    keys = np.concatenate([np.frombuffer(bytes(k), dtype=KEY_DTYPE) for _, k in taken])
    params = {name: keys[name].tolist() for name in KEY_FIELDS}
    with conn.cursor() as cur, cur.copy(_READ_BACK, params) as copy:
        payload = b"".join(bytes(block) for block in copy)
    body = payload[len(copybin.HEADER) : -len(copybin.TRAILER)]
    rows: np.ndarray = enriched_from_rows(copybin.decode_rows(TABLE_COLUMNS, body))
    return rows
