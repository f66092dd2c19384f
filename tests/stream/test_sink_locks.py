"""Two sinks writing at once (the embedded runtime's two writers) do not deadlock on the
kits' rows, whatever order their batches name the kits in.

Real PostgreSQL. Each batch carries status messages of kits 1 and 2, in opposite
orders; the test holds each writer after its first status update until the other
has made its own (or two seconds have passed), which is exactly the interleaving
that deadlocks two transactions updating the same two rows in opposite orders.
The sink locks the batch's kits in kit order first, so the second writer waits
at that lock instead, and both batches commit.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import Any

import numpy as np
import psycopg
import pytest

from firmware_protocol.readings import READING_DTYPE
from firmware_protocol.status import StatusMessage
from ingest.admission import Admitted, StatusUpdate
from storage.kits import MasterKey, register_kit
from stream import sink as sink_module
from stream.core.batch import ENRICHED_DTYPE
from stream.core.process import CoreConfig
from stream.sink import PostgresSink

pytestmark = pytest.mark.postgres


def _status(kit: int, received_ms: int) -> StatusUpdate:
    message = StatusMessage(
        battery_pct=80.0,
        battery_v=3.9,
        firmware_version="1.4.2",
        uptime_s=60,
        queue_depth=0,
        ts_ms=received_ms,
        kit_id=kit,
    )
    return StatusUpdate(kit, message, received_ms)


def _batch(kits: list[int]) -> Admitted:
    return Admitted(
        np.empty(0, READING_DTYPE),
        np.empty(0, np.int64),
        statuses=[_status(k, 1_700_000_000_000 + i) for i, k in enumerate(kits)],
    )


def test_two_writers_updating_the_same_kits_in_opposite_orders_both_commit(
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        master = MasterKey.generate()
        for kit in (1, 2):
            register_kit(conn, master, kit)
    both_started = threading.Barrier(2, timeout=2.0)
    record_status = sink_module.record_status
    calls = threading.local()

    def held_record_status(*args: Any, **kwargs: Any) -> None:
        record_status(*args, **kwargs)
        calls.n = getattr(calls, "n", 0) + 1
        if calls.n == 1:
            # Broken after 2 s: the other writer is waiting for this one's locks.
            with suppress(threading.BrokenBarrierError):
                both_started.wait()

    monkeypatch.setattr(sink_module, "record_status", held_record_status)
    errors: list[BaseException] = []

    def write(kits: list[int]) -> None:
        sink = PostgresSink(migrated_database_url, CoreConfig())
        try:
            sink.write(_batch(kits), np.zeros(0, ENRICHED_DTYPE))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            sink.close()

    writers = [threading.Thread(target=write, args=(kits,)) for kits in ([2, 1], [1, 2])]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(30)
    assert errors == []
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT kit_id, last_status IS NOT NULL, last_seen_at IS NOT NULL"
            " FROM kits ORDER BY kit_id"
        ).fetchall()
    assert rows == [(1, True, True), (2, True, True)]
