"""Pool factories give autocommit connections that work with the storage functions."""

from __future__ import annotations

import asyncio

import pytest

from storage.pool import create_async_pool, create_pool
from storage.rejects import reject_counts

pytestmark = pytest.mark.postgres


def test_sync_pool(migrated_database_url: str) -> None:
    with create_pool(migrated_database_url, max_size=2) as pool, pool.connection() as conn:
        assert conn.autocommit
        assert reject_counts(conn) == {}
        row = conn.execute("SELECT current_setting('application_name')").fetchone()
        assert row == ("bikesense",)


def test_async_pool(migrated_database_url: str) -> None:
    async def run() -> object:
        async with (
            create_async_pool(migrated_database_url, max_size=2) as pool,
            pool.connection() as conn,
        ):
            cur = await conn.execute("SELECT 41 + 1, current_setting('jit')")
            return await cur.fetchone()

    assert asyncio.run(run()) == (42, "off")  # the API's short reads are never JIT-compiled
