"""Who is asking: the caller's role from an API key, as FastAPI dependencies.

:func:`get_principal` resolves every request to a :class:`api.roles.Principal`:
a valid key gives its role, no key gives the public role (rate-limited per
client address), and a key that is not valid is a 401, never a silent
downgrade to public. The gates that need a keyed role (raw readings, fleet
health) are dependencies too, so a handler names the caller it needs in its
signature: ``reader: RawReaderDep``. What each role may see is decided in
:mod:`api.privacy`.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import StateDep
from api.errors import RateLimitedError, ServiceUnavailableError, UnauthorizedError
from api.keys import verify_key
from api.privacy import check_fleet_access, check_raw_access
from api.roles import Principal, Role

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                        description="a key from `bikesense keys create --role ...`")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer",
                     description="the same key, as `Authorization: Bearer <key>`")


async def get_principal(
    request: Request, state: StateDep,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller's role: from a valid key, else public (and then rate-limited)."""
    token = api_key or (bearer.credentials if bearer else None)
    if token:
        if state.pool is None:
            raise ServiceUnavailableError("keys cannot be checked without a database",
                                          retry_after_s=None)
        # A pool or connection failure here is a 503, translated in api.errors.
        async with state.pool.connection(timeout=state.api_settings.database_timeout_s) as conn:
            role = await verify_key(conn, token)
        if role is None:
            raise UnauthorizedError("this API key is not valid (unknown, malformed or revoked)",
                                    parameter="X-API-Key" if api_key else "Authorization",
                                    location="header")
        return Principal(role=role, key_id=token[4:16])
    client = request.client.host if request.client else "unknown"
    wait_s = state.limiter.take(client)
    if wait_s is not None:
        state.metrics.rate_limited.inc()
        raise RateLimitedError(f"too many requests from {client}; retry in {wait_s:.1f} s "
                               "(an API key lifts the public limit)", parameter=None,
                               location="client", headers={"Retry-After": str(math.ceil(wait_s))})
    return Principal(role=Role.PUBLIC)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def raw_reader(principal: PrincipalDep) -> Principal:
    """The caller, if its role may read raw readings (researchers and admins)."""
    check_raw_access(principal)
    return principal


def fleet_viewer(principal: PrincipalDep) -> Principal:
    """The caller, if its role may see fleet health (officers and admins)."""
    check_fleet_access(principal)
    return principal


RawReaderDep = Annotated[Principal, Depends(raw_reader)]
FleetViewerDep = Annotated[Principal, Depends(fleet_viewer)]
