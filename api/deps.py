"""Dependencies of the routes, as ``Annotated`` aliases.

Settings come through :func:`get_settings` (the API's section through
:func:`get_api_settings`), the privacy policy through :func:`get_policy`, and the
current instant through :func:`get_now`, all of which tests may override; the
pool, limiter and broadcaster live on the :class:`api.state.ApiState` the
lifespan built. The caller's role comes from :mod:`api.auth`.

A pool that hands out no connection in time, or a connection that fails, is
not caught here: it reaches the handlers in :mod:`api.errors` as it is and
becomes a 503 there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Query, Request
from psycopg_pool import AsyncConnectionPool

from api.errors import BadParameterError, ServiceUnavailableError
from api.export_stream import ExportSource
from api.params import EARLIEST, LATEST
from api.state import ApiState
from bikesense.policy import PrivacyPolicy
from bikesense.settings import ApiSettings, Settings

#: The longest time range one request may ask for, and the range when none is given.
MAX_RANGE = timedelta(days=400)
DEFAULT_RANGE = timedelta(hours=24)


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_api_settings(state: StateDep) -> ApiSettings:
    return state.settings.api


def get_policy(state: StateDep) -> PrivacyPolicy:
    return state.policy


SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
PolicyDep = Annotated[PrivacyPolicy, Depends(get_policy)]


def get_pool(state: StateDep) -> AsyncConnectionPool:
    if state.pool is None:
        raise ServiceUnavailableError("no database configured", retry_after_s=None)
    return state.pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(
    pool: PoolDep, api: ApiSettingsDep
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection for the request (a route that streams takes its own)."""
    async with pool.connection(timeout=api.database_timeout_s) as conn:
        yield conn


ConnDep = Annotated[psycopg.AsyncConnection[Any], Depends(get_conn)]


def get_export_source(state: StateDep, pool: PoolDep) -> ExportSource:
    api = state.settings.api
    return ExportSource(
        pool=pool,
        keys=state.pseudonym_keys,
        day_tz=state.policy.day_tz,
        batch_rows=api.export_batch_rows,
        timeout_s=api.database_timeout_s,
        send_timeout_s=api.send_timeout_s,
        bytes_sent=state.metrics.export_rows,
    )


ExportSourceDep = Annotated[ExportSource, Depends(get_export_source)]


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
        raise BadParameterError(
            f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}", parameter=name
        )
    return value


def get_time_range(
    now: NowDep,
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="start, ISO 8601 (naive = UTC); default `to` minus 24 h",
            examples=["2026-11-21T00:00:00Z"],
        ),
    ] = None,
    to: Annotated[
        datetime | None,
        Query(
            description="end (exclusive), ISO 8601; default now, rounded up to the minute",
            examples=["2026-11-22T00:00:00Z"],
        ),
    ] = None,
) -> TimeRange:
    if to is None:
        end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    else:
        end = _aware(to, "to")
    start = _aware(from_, "from") if from_ is not None else end - DEFAULT_RANGE
    if start >= end:
        raise BadParameterError(
            f"from ({start.isoformat()}) must be before to ({end.isoformat()})", parameter="from"
        )
    if end - start > MAX_RANGE:
        raise BadParameterError(
            f"the range may span at most {MAX_RANGE.days} days", parameter="from"
        )
    return TimeRange(start=start, end=end, open_ended=to is None)


TimeRangeDep = Annotated[TimeRange, Depends(get_time_range)]
