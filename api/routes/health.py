"""Liveness and metrics for operators."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.deps import StateDep
from api.models import Health

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Is the API up, and can it reach the database?",
    responses={503: {"model": Health, "description": "the database is unreachable"}},
)
async def healthz(state: StateDep) -> JSONResponse:
    database = "unavailable"
    if state.pool is not None:
        try:
            async with state.pool.connection(
                timeout=min(2.0, state.api_settings.database_timeout_s)
            ) as conn:
                await conn.execute("SELECT 1")
            database = "ok"
        except Exception:  # noqa: BLE001 - any failure means "not healthy", never a 500
            database = "unavailable"
    body = Health(
        status="ok" if database == "ok" else "degraded",
        database=database,
        live_clients=state.broadcaster.clients,
    )
    return JSONResponse(body.model_dump(), status_code=200 if database == "ok" else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"example": "bikesense_api_requests_total{...} 12.0"}}}
    },
)
async def metrics(state: StateDep) -> Response:
    state.metrics.live_clients.set(state.broadcaster.clients)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
