"""Server-Sent Events when new window aggregates land."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.auth import PrincipalDep, key_watch
from api.deps import ApiSettingsDep, PolicyDep, StateDep
from api.errors import ServiceUnavailableError
from api.live import sse_stream
from api.models import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["live"], responses=ERROR_RESPONSES)

#: SSE connections served at once; each holds a socket and a small queue.
MAX_LIVE_CLIENTS = 1000


@router.get(
    "/live",
    summary="Server-Sent Events: new aggregates have landed",
    description=(
        '`event: aggregates` with `data` `{"v": 1, "metrics": [...], "resolutions": [...],'
        ' "windows": [[window_s, start_ms], ...], "cells": [...]}` after each batch the '
        "stream commits (the public gets no `cells`: which cells a bike just crossed is a live "
        "track). `event: resync` means some events were missed (slow client, reconnect): "
        "reload what you show. Comments (`: ping`) keep the connection open."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "example": 'event: aggregates\ndata: {"v":1,"metrics":["pm25"]}\n\n'
                }
            }
        }
    },
)
async def live(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    api: ApiSettingsDep,
    policy: PolicyDep,
) -> StreamingResponse:
    if state.broadcaster.clients >= MAX_LIVE_CLIENTS:
        raise ServiceUnavailableError(
            "too many live clients; poll the tiles instead", retry_after_s=30
        )
    return StreamingResponse(
        sse_stream(
            state.broadcaster,
            public=not policy.live_cells(principal.role.value),
            heartbeat_s=api.live_heartbeat_s,
            is_disconnected=request.is_disconnected,
            still_valid=key_watch(state, principal),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
