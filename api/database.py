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

The third bound is the API's own: ``send_timeout_s``, how long an export waits
for its client to take the next chunk (``api.export_stream.ExportResponse``).
It is shorter than the idle-in-transaction timeout, so an export normally ends
itself and gives its connections back cleanly; the server-side limit is the
backstop.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.config import ApiSettings


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def session_conninfo(url: str, api: ApiSettings) -> str:
    """``url`` with the API's session limits added to its ``options``."""
    ours = (
        f"-c statement_timeout={_ms(api.statement_timeout_s)} "
        f"-c idle_in_transaction_session_timeout={_ms(api.idle_in_transaction_timeout_s)}"
    )
    given = str(conninfo_to_dict(url).get("options") or "")
    return make_conninfo(url, options=f"{given} {ours}".strip())
