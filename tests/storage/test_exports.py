"""Raw readings out of storage.exports, against data written by the batch writer."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from storage import copybin
from storage.exceptions import QueryError
from storage.export_columns import on_map_column, qa_flag_names
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
from stream.core.partials import Metric
from stream.core.policy import DEFAULT_POLICY
from stream.core.qa import QaFlag, flag_names
from tests.storage.storage_factories import T0_MS, make_readings
from tests.stream.stream_factories import T0_MS as RANDOM_T0_MS
from tests.stream.stream_factories import random_enriched

pytestmark = pytest.mark.postgres

AGGREGATE = functools.partial(
    aggregate, resolutions=(8, 10), window_sizes_s=(60, 3600), day_tz="UTC"
)
T0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
#: Every column binary rows can hold (qa_flag_names is text only).
NAMES = tuple(name for name, c in COLUMNS.items() if c.binary is not None)


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def blocks(
    url: str,
    flt: ExportFilter,
    encoding: Encoding,
    names: tuple[str, ...] = NAMES,
    *,
    slice_rows: int = 64,
) -> list[bytes]:
    """The export's blocks, as storage returns them."""

    async def run() -> list[bytes]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
            return [
                block.data
                async for block in aiter_export_blocks(
                    [aconn], names, flt, encoding, day_tz="UTC", slice_rows=slice_rows
                )
            ]

    return asyncio.run(run())


def export(url: str, flt: ExportFilter, *, slice_rows: int = 64) -> list[np.ndarray]:
    """The export's binary blocks, decoded."""
    return [
        decode_binary_rows(NAMES, data, pseudonymous=False)
        for data in blocks(url, flt, Encoding.BINARY, slice_rows=slice_rows)
    ]


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


def test_the_qa_columns_say_what_the_stream_decided_in_every_encoding(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    # Flags of every kind and combination, absent values, zero intervals, readings
    # without a cell: the export's columns against QaFlag and the policy the stream runs.
    rows = random_enriched(7, 600)
    rng = np.random.default_rng(7)
    some = rng.random(len(rows)) < 0.3
    rows["qa_flags"][some] = rng.integers(0, int(QaFlag.ALL) + 1, int(some.sum()))
    rows["cell"][rng.random(len(rows)) < 0.05] = 0
    write_batch(conn, rows, AGGREGATE)
    rows = rows[
        np.lexsort((rows["idx"], rows["seq"], rows["boot_id"], rows["kit_id"], rows["ts_ms"]))
    ]
    on_map = tuple(on_map_column(m) for m in Metric)
    names = ("qa_flags", "qa_flag_names", *on_map)
    around = datetime.fromtimestamp(RANDOM_T0_MS / 1000, UTC)
    flt = ExportFilter(around - timedelta(days=4), around + timedelta(days=4))
    expected_names = ["|".join(flag_names(int(f))) for f in rows["qa_flags"].tolist()]
    expected_on_map = {
        on_map_column(m): DEFAULT_POLICY.publishable(rows, m).tolist() for m in Metric
    }
    assert any("|" in n for n in expected_names)
    assert "" in expected_names
    assert all(any(v) and not all(v) for v in expected_on_map.values())

    text = b"".join(blocks(migrated_database_url, flt, Encoding.CSV, names))
    got = list(csv.DictReader(io.StringIO(text.decode()), fieldnames=names))
    assert [int(r["qa_flags"]) for r in got] == rows["qa_flags"].tolist()
    assert [r["qa_flag_names"] for r in got] == expected_names
    for column, expected in expected_on_map.items():
        assert [r[column] for r in got] == ["TRUE" if e else "FALSE" for e in expected], column

    features = blocks(migrated_database_url, flt, Encoding.GEOJSON, names)
    props = [f["properties"] for b in features for f in json.loads(b"[" + b + b"]")]
    assert [p["qa_flag_names"] for p in props] == expected_names
    for column, expected in expected_on_map.items():
        assert [p[column] for p in props] == expected, column

    binary = np.concatenate(
        [
            decode_binary_rows(("qa_flags", *on_map), b, pseudonymous=False)
            for b in blocks(migrated_database_url, flt, Encoding.BINARY, ("qa_flags", *on_map))
        ]
    )
    assert [qa_flag_names(int(f)) for f in binary["qa_flags"].tolist()] == expected_names
    for column, expected in expected_on_map.items():
        assert binary[column].tolist() == expected, column


def test_flag_names_are_text_only(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    write_batch(conn, make_readings(5, seed=1), AGGREGATE)
    flt = ExportFilter(T0, T0 + timedelta(hours=1))
    with pytest.raises(QueryError, match="'qa_flag_names' is not in binary rows"):
        blocks(migrated_database_url, flt, Encoding.BINARY, ("ts", "qa_flag_names"))
