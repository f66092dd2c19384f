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
    # From the probe's own connection, not the pool: exports and heavy queries may hold
    # every pooled connection while the database answers well (api.database.HealthProbe).
    healthy = state.health is not None and await state.health.check()
    database = "ok" if healthy else "unavailable"
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
