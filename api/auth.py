"""Who is asking: the caller's role from an API key, as FastAPI dependencies.

:func:`get_principal` resolves every request to a :class:`api.roles.Principal`:
a valid key gives its role, no key gives the public role (rate-limited per
client address), and a key that is not valid is a 401, never a silent
downgrade to public, and counts against the caller's public limit (a 429 once
it is spent). The gates that need a keyed role (raw readings, fleet
health) are dependencies too, so a handler names the caller it needs in its
signature: ``reader: RawReaderDep``. What each role may see is decided in
:mod:`api.privacy`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

import psycopg
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolTimeout

from api.deps import PolicyDep, StateDep
from api.errors import RateLimitedError, ServiceUnavailableError, UnauthorizedError
from api.keys import key_is_active, verify_key
from api.privacy import check_fleet_access, check_raw_access
from api.roles import Principal, Role
from api.state import ApiState

_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="a key from `bikesense keys create --role ...`",
)
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="Bearer",
    description="the same key, as `Authorization: Bearer <key>`",
)


async def get_principal(
    request: Request,
    state: StateDep,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller's role: from a valid key, else public (and then rate-limited)."""
    token = api_key or (bearer.credentials if bearer else None)
    client = request.client.host if request.client else "unknown"
    if token:
        if state.pool is None:
            raise ServiceUnavailableError(
                "keys cannot be checked without a database", retry_after_s=None
            )
        # A pool or connection failure here is a 503, translated in api.errors.
        async with state.pool.connection(timeout=state.settings.api.database_timeout_s) as conn:
            role = await verify_key(conn, token)
        if role is None:
            # A key that is not valid costs the caller a public request: guessing keys
            # (each a lookup) is no way around the public limit (docs/privacy.md).
            _take_public(state, client)
            raise UnauthorizedError(
                "this API key is not valid (unknown, malformed or revoked)",
                parameter="X-API-Key" if api_key else "Authorization",
                location="header",
            )
        return Principal(role=role, key_id=token[4:16])
    _take_public(state, client)
    return Principal(role=Role.PUBLIC)


def _take_public(state: ApiState, client: str) -> None:
    """Take a public request from ``client``'s bucket, or refuse with 429."""
    wait_s = state.limiter.take(client)
    if wait_s is not None:
        state.metrics.rate_limited.inc()
        raise RateLimitedError(
            f"too many requests from {client}; retry in {wait_s:.1f} s "
            "(an API key lifts the public limit)",
            parameter=None,
            location="client",
            headers={"Retry-After": str(math.ceil(wait_s))},
        )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def key_watch(state: ApiState, principal: Principal) -> Callable[[], Awaitable[bool]] | None:
    """For a caller with a key: a check that the key is still valid, for streams that
    outlive the request that opened them (``api.live.sse_stream``); None for the public."""
    key_id, pool = principal.key_id, state.pool
    if key_id is None or pool is None:
        return None

    async def still_valid() -> bool:
        try:
            async with pool.connection(timeout=state.settings.api.database_timeout_s) as conn:
                return await key_is_active(conn, key_id)
        except (psycopg.Error, PoolTimeout):
            # Unknown for now (the database is away): keep serving, check again next time.
            return True

    return still_valid


def raw_reader(principal: PrincipalDep, policy: PolicyDep) -> Principal:
    """The caller, if its role may read raw readings (researchers and admins)."""
    check_raw_access(principal, policy)
    return principal


def fleet_viewer(principal: PrincipalDep, policy: PolicyDep) -> Principal:
    """The caller, if its role may see fleet health (officers and admins)."""
    check_fleet_access(principal, policy)
    return principal


RawReaderDep = Annotated[Principal, Depends(raw_reader)]
FleetViewerDep = Annotated[Principal, Depends(fleet_viewer)]
