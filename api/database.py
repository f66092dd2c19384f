"""The API's database sessions: what bounds them.

Every connection of the API's pool starts with two server-side limits, passed
as ``options`` in its connection string (kept together with any the operator
set), so they hold from the first statement and cost no round trip:

* ``statement_timeout`` (``BIKESENSE_STATEMENT_TIMEOUT_S``): a query running
  longer is cancelled; the request answers 503 (``psycopg.OperationalError``,
  translated in :mod:`api.errors`), and the connection is free again;
* ``idle_in_transaction_session_timeout`` (``BIKESENSE_IDLE_IN_TRANSACTION_TIMEOUT_S``):
  an export holds a read-only transaction (one snapshot for all its slices) while
  its client reads; when the client stops reading, PostgreSQL ends the session
  after this long, so a stalled download cannot hold a connection idle in
  transaction for ever. The export then fails visibly (``api.export_stream``).

Beside the bounds, one setting: ``jit=off``. The API's queries are short, but their
cost estimates pass PostgreSQL's ``jit_above_cost`` on a large table, and compiling
them cost more than it saved: a 400-day ``/v1/cells`` at resolution 10 over 1,000,000
readings took 2.2 s with JIT and 0.9 s without (``bench/bench_reads.py``'s data).
An operator's own ``options`` come first and ours after, and a connection's options
override per-role and per-database defaults, so JIT stays off for the API whatever
the URL or ``ALTER ROLE`` say.

The third bound is the API's own: ``send_timeout_s``, how long an export waits
for its client to take the next chunk (``api.export_stream.ExportResponse``).
It is shorter than the idle-in-transaction timeout, so an export normally ends
itself and gives its connections back cleanly; the server-side limit is the
backstop.

``/healthz`` does not use the pool: :class:`HealthProbe` keeps a connection of
its own, so that it tells the truth while exports and heavy queries hold every
pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bikesense.settings import ApiSettings


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def session_conninfo(url: str, api: ApiSettings) -> str:
    """``url`` with the API's session limits added to its ``options``."""
    ours = (
        f"-c statement_timeout={_ms(api.statement_timeout_s)} "
        f"-c idle_in_transaction_session_timeout={_ms(api.idle_in_transaction_timeout_s)} "
        "-c jit=off"
    )
    given = str(conninfo_to_dict(url).get("options") or "")
    return make_conninfo(url, options=f"{given} {ours}".strip())


#: How long ``/healthz`` waits for its answer (connecting included) before it says "degraded".
HEALTH_TIMEOUT_S = 2.0


class HealthProbe:
    """``/healthz``'s own connection, outside the pool: slow exports and heavy queries
    can hold every pooled connection, and the health check must still tell whether the
    database answers, not whether the pool has a connection free.

    One connection (application name ``bikesense-api-health``), opened on first use and
    opened again after any failure; each check is ``SELECT 1`` under ``timeout_s``
    (connecting included) and the session's own ``statement_timeout`` of the same
    length. Checks at the same time share the connection, one after the other.
    """

    def __init__(self, url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        limit = _ms(timeout_s)
        ours = f"-c statement_timeout={limit} -c idle_in_transaction_session_timeout={limit}"
        given = str(conninfo_to_dict(url).get("options") or "")
        self._conninfo = make_conninfo(
            url,
            options=f"{given} {ours}".strip(),
            application_name="bikesense-api-health",
            connect_timeout=max(2, math.ceil(timeout_s)),  # libpq's floor is 2 s
        )
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """True when the database answered ``SELECT 1`` within the timeout."""
        try:
            async with asyncio.timeout(self._timeout_s), self._lock:
                return await self._select_one()
        except Exception:  # noqa: BLE001 - any failure means "not healthy", never a 500
            return False

    async def _select_one(self) -> bool:
        while True:
            fresh = self._conn is None or self._conn.closed
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
                await self._conn.execute("SELECT 1")
            except Exception:
                await self.close()
                if fresh:
                    raise
                # A kept connection that failed (its backend ended, the server restarted)
                # says nothing yet about the database: try once more on a new one.
                continue
            except BaseException:
                await self.close()  # timed out: this connection is not trusted again
                raise
            return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
