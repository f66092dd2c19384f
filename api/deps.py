"""Dependencies of the routes, as ``Annotated`` aliases.

Settings come through :func:`get_settings` / :func:`get_api_settings`, and the
current instant through :func:`get_now`, all of which tests may override; the
pool, limiter and broadcaster live on the :class:`api.state.ApiState` the
lifespan built.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolTimeout

from api.config import ApiSettings
from api.errors import ApiError, BadParameterError, RateLimitedError, UnauthorizedError
from api.keys import verify_key
from api.roles import Principal, Role
from api.state import ApiState
from bikesense.settings import Settings
from storage.queries import BBox

#: Oldest and newest instants the API accepts: outside, a request is a mistake.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_RANGE = timedelta(days=400)
DEFAULT_RANGE = timedelta(hours=24)


class ServiceUnavailableError(ApiError):
    status_code = 503
    code = "unavailable"


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_api_settings(state: StateDep) -> ApiSettings:
    return state.api_settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]


async def get_conn(state: StateDep) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    if state.pool is None:
        raise ServiceUnavailableError("no database configured", parameter=None, location="server")
    try:
        async with state.pool.connection(timeout=state.api_settings.database_timeout_s) as conn:
            yield conn
    except PoolTimeout as exc:
        raise ServiceUnavailableError("the database is not reachable; try again shortly",
                                 parameter=None, location="server",
                                 headers={"Retry-After": "5"}) from exc
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(f"the database connection failed: {exc}",
                                 parameter=None, location="server",
                                 headers={"Retry-After": "5"}) from exc


ConnDep = Annotated[psycopg.AsyncConnection[Any], Depends(get_conn)]

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
                                     parameter=None, location="server")
        try:
            async with state.pool.connection(
                    timeout=state.api_settings.database_timeout_s) as conn:
                role = await verify_key(conn, token)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise ServiceUnavailableError("the database is not reachable; try again shortly",
                                     parameter=None, location="server") from exc
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


def get_now() -> datetime:
    """The request's "now", UTC: what open time ranges end at and fleet health counts to.

    Every route that asks for it in one request gets the same instant (FastAPI
    caches a dependency per request). Tests choose their own now with
    ``app.dependency_overrides[get_now]``, so that data of a fixed day means the
    same to them on any day.
    """
    return datetime.now(UTC)


NowDep = Annotated[datetime, Depends(get_now)]


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    open_ended: bool  # ``to`` was not given: the range follows the clock

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # documented: naive times are UTC
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadParameterError(f"not a usable instant: {exc}", parameter=name) from exc
    if not EARLIEST <= value <= LATEST:
        raise BadParameterError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}",
                           parameter=name)
    return value


def get_time_range(
    now: NowDep,
    from_: Annotated[datetime | None, Query(
        alias="from", description="start, ISO 8601 (naive = UTC); default `to` minus 24 h",
        examples=["2026-11-21T00:00:00Z"])] = None,
    to: Annotated[datetime | None, Query(
        description="end (exclusive), ISO 8601; default now, rounded up to the minute",
        examples=["2026-11-22T00:00:00Z"])] = None,
) -> TimeRange:
    if to is None:
        end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    else:
        end = _aware(to, "to")
    start = _aware(from_, "from") if from_ is not None else end - DEFAULT_RANGE
    if start >= end:
        raise BadParameterError(f"from ({start.isoformat()}) must be before to ({end.isoformat()})",
                           parameter="from")
    if end - start > MAX_RANGE:
        raise BadParameterError(f"the range may span at most {MAX_RANGE.days} days",
                                parameter="from")
    return TimeRange(start=start, end=end, open_ended=to is None)


TimeRangeDep = Annotated[TimeRange, Depends(get_time_range)]


def parse_bbox(text: str, parameter: str = "bbox") -> BBox:
    """``west,south,east,north`` in WGS84 degrees."""
    parts = text.split(",")
    if len(parts) != 4:
        raise BadParameterError("needs four numbers: west,south,east,north", parameter=parameter)
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise BadParameterError("needs four numbers: west,south,east,north",
                           parameter=parameter) from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise BadParameterError("coordinates must be finite numbers", parameter=parameter)
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise BadParameterError("longitudes must lie within -180..180", parameter=parameter)
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise BadParameterError("latitudes must lie within -90..90", parameter=parameter)
    if west >= east:
        raise BadParameterError(f"west ({west}) must be less than east ({east})",
                                parameter=parameter)
    if south >= north:
        raise BadParameterError(f"south ({south}) must be less than north ({north})",
                           parameter=parameter)
    return BBox(west=west, south=south, east=east, north=north)


def check_resolution(resolution: int | None, settings: Settings, default: int) -> int:
    if resolution is None:
        return default
    if resolution not in settings.h3_resolutions:
        known = ", ".join(str(r) for r in settings.h3_resolutions)
        raise BadParameterError(
            f"resolution {resolution} is not aggregated here; use one of {known}",
            parameter="resolution")
    return resolution
