"""The FastAPI application factory.

``create_app(settings)`` builds an app; nothing is opened at
import time. Its lifespan opens the connection pool and the LISTEN task for
live updates, and closes both on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from api.bands import load_bands
from api.database import HealthProbe, session_conninfo
from api.errors import install_error_handlers
from api.export_slots import ExportSlots
from api.live import Broadcaster, listen_forever
from api.metrics import ApiMetrics, RequestMetrics
from api.ratelimit import TokenBuckets
from api.routes import (
    apidocs,
    basemap,
    cells,
    exports,
    health,
    kits,
    live,
    meta,
    page,
    reference,
    tiles,
    timeseries,
)
from api.state import ApiState
from api.webassets import asset_dirs
from bikesense.policy import PrivacyPolicy
from bikesense.settings import Settings, load_settings, resolve_database_url
from storage.pool import create_async_pool

log = logging.getLogger(__name__)

DESCRIPTION = """
Heat-map tiles, cells, time series, exports and live updates of the bikesense
fleet's air-quality (PM1, PM2.5, PM10, NO2) and noise readings.

Anonymous callers see only what the privacy rules allow: a cell-window when it
holds at least k distinct rides (default 3), windows of an hour or more, no raw
readings. An API key (`X-API-Key` or `Authorization: Bearer`) from
`bikesense keys create --role officer|researcher|admin` unlocks finer windows,
fleet health and exports. Every refused request answers with a JSON body
naming the parameter at fault. Mobile readings are indicative, not regulatory.
"""


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    listen: bool = True,
) -> FastAPI:
    """Build the API. ``database_url`` overrides what ``settings`` resolve to;
    ``listen=False`` skips the LISTEN task (live updates) for tools that do not need it."""
    settings = settings or load_settings()
    api_settings = settings.api
    state = ApiState(
        settings=settings,
        policy=PrivacyPolicy.from_settings(settings),
        bands=load_bands(api_settings.band_version),
        metrics=ApiMetrics(),
        limiter=TokenBuckets(
            api_settings.public_rate_per_s,
            api_settings.public_burst,
            api_settings.rate_limit_clients,
        ),
        broadcaster=Broadcaster(api_settings.live_queue_size),
        export_slots=ExportSlots(api_settings.export_concurrency, api_settings.export_per_key),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or resolve_database_url(settings)
        state.database_url = url
        state.pool = create_async_pool(
            session_conninfo(url, api_settings),
            min_size=api_settings.pool_min_size,
            max_size=api_settings.pool_max_size,
        )
        # Not waiting: the API starts (and /healthz says "degraded") with the database down.
        await state.pool.open(wait=False)
        # /healthz's own connection, so that it answers while the pool is exhausted.
        state.health = HealthProbe(url)
        if listen:
            ready = asyncio.Event()
            state.tasks.append(
                asyncio.create_task(
                    listen_forever(url, state.broadcaster, ready=ready), name="bikesense-listen"
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 2.0)
        try:
            yield
        finally:
            for task in state.tasks:
                task.cancel()
            for task in state.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.tasks.clear()
            await state.health.close()
            state.health = None
            await state.pool.close()
            state.pool = None

    # /docs is served by api/routes/apidocs.py with local assets (FastAPI's loads a CDN's).
    app = FastAPI(
        title="bikesense API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.api = state
    install_error_handlers(app)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    if api_settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api_settings.cors_origins),
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization"],
            expose_headers=["ETag"],
        )
    for module in (
        health,
        meta,
        tiles,
        cells,
        timeseries,
        exports,
        live,
        kits,
        reference,
        basemap,
        page,
        apidocs,
    ):
        app.include_router(module.router)
    assets, missing = asset_dirs()
    for name, folder in assets.items():
        app.mount(f"/static/{name}", StaticFiles(directory=folder), name=name)
    if missing:
        log.warning(
            "map assets missing (%s): run `npm ci --prefix api/web`", ", ".join(map(str, missing))
        )
    return app
