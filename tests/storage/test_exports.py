"""Raw readings out of storage.exports, against data written by the batch writer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from storage import copybin
from storage.exports import (
    COLUMNS,
    Encoding,
    ExportFilter,
    aiter_export_blocks,
    decode_binary_rows,
)
from storage.selection import BBox
from storage.writer import write_batch
from stream.core.aggregate import aggregate
from tests.storage.storage_factories import T0_MS, make_readings

pytestmark = pytest.mark.postgres

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(60, 3600), day_tz="UTC"
)
T0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
NAMES = tuple(COLUMNS)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def export(url: str, flt: ExportFilter, *, slice_rows: int = 64) -> list[np.ndarray]:
    """The export's binary blocks, decoded."""

    async def run() -> list[bytes]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
            return [
                block.data
                async for block in aiter_export_blocks(
                    [aconn], NAMES, flt, Encoding.BINARY, day_tz="UTC", slice_rows=slice_rows
                )
            ]

    return [decode_binary_rows(NAMES, data, pseudonymous=False) for data in asyncio.run(run())]


def test_raw_readings_round_trip_in_time_order(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    a = make_readings(250, seed=1)
    b = make_readings(130, kit_id=2, seed=2, t0_ms=T0_MS + 500)
    b["satellites"][3] = -1
    b["hdop"][4] = np.nan
    b["cell"][5] = 0
    write_batch(conn, np.concatenate([a, b]), AGGREGATE)
    end = T0 + timedelta(hours=1)
    blocks = export(migrated_database_url, ExportFilter(T0, end))
    assert len(blocks) > 1
    got = np.concatenate(blocks)
    expected = np.concatenate([a, b])
    expected = expected[
        np.lexsort(
            (
                expected["idx"],
                expected["seq"],
                expected["boot_id"],
                expected["kit_id"],
                expected["ts_ms"],
            )
        )
    ]
    assert len(got) == len(expected)
    # Absent values come back as the stream marks them: NaN, -1 satellites, cell 0.
    for name in expected.dtype.names or ():
        if name == "ts_ms":
            np.testing.assert_array_equal(
                copybin.pg_timestamp_to_ms(got["ts"]), expected[name], err_msg=name
            )
        elif name == "received_ms":
            np.testing.assert_array_equal(
                copybin.pg_timestamp_to_ms(got["received_at"]), expected[name], err_msg=name
            )
        else:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    only_b = np.concatenate(export(migrated_database_url, ExportFilter(T0, end, kit_ids=(2,))))
    assert len(only_b) == 130
    box = BBox(5.12, 52.09, 5.1215, 52.0910)
    inside = np.concatenate(export(migrated_database_url, ExportFilter(T0, end, bbox=box)))
    assert len(inside) > 0
    assert ((inside["lat_deg"] >= 52.09) & (inside["lat_deg"] <= 52.091)).all()
    assert export(migrated_database_url, ExportFilter(end, end + timedelta(hours=1))) == []


def test_an_export_stopped_early_leaves_its_connection_usable(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    write_batch(conn, make_readings(250, seed=1), AGGREGATE)

    async def run() -> tuple[Any, ...] | None:
        async with await psycopg.AsyncConnection.connect(
            migrated_database_url, autocommit=True
        ) as aconn:
            blocks = aiter_export_blocks(
                [aconn],
                NAMES,
                ExportFilter(T0, T0 + timedelta(hours=1)),
                Encoding.BINARY,
                day_tz="UTC",
                slice_rows=10,
            )
            await anext(blocks)
            await blocks.aclose()
            cur = await aconn.execute("SELECT 1")
            return await cur.fetchone()

    assert asyncio.run(run()) == (1,)
