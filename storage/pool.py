"""Connection pools: factories only, so that each process and each test makes its own."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

#: Fail fast rather than hang when the database is gone: the caller decides to retry.
DEFAULT_TIMEOUT_S = 10.0


def _kwargs(application_name: str) -> dict[str, Any]:
    # The application name shows in pg_stat_activity, so operators see who holds what.
    return {"application_name": application_name}


def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    application_name: str = "bikesense",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    open_now: bool = True,
) -> ConnectionPool:
    """A psycopg_pool pool of autocommit connections to ``url``.

    Connections are autocommit: every storage function opens the transactions it
    needs itself. ``open_now=False`` leaves opening to the caller (``pool.open()``
    or ``with pool:``), e.g. inside an application's lifespan.
    """
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=open_now,
        kwargs={"autocommit": True, **_kwargs(application_name)},
        check=ConnectionPool.check_connection,
        name=application_name,
    )


async def _no_jit(conn: AsyncConnection[Any]) -> None:
    # The API's reads answer in milliseconds; JIT compilation, chosen by a cost
    # threshold meant for analytics, added about 40 ms to a 40 ms tile query
    # (EXPLAIN ANALYZE on 30 days of a town, bench/bench_tiles.py).
    await conn.execute("SET jit = off")


def create_async_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    application_name: str = "bikesense-api",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncConnectionPool:
    """The asyncio twin of :func:`create_pool`, for the API (JIT off); open it with
    ``await pool.open()``."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        kwargs={"autocommit": True, **_kwargs(application_name)},
        configure=_no_jit,
        check=AsyncConnectionPool.check_connection,
        name=application_name,
    )
