"""Prometheus metrics of one API instance, in its own registry (no global state)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

# Tile budget is 50 ms at p95 (DESIGN.md), so the buckets are fine below 0.1 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bikesense_api_requests", "HTTP requests by route template and status",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "bikesense_api_request_seconds", "Time to the response head, by route template",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.tile_render = Histogram(
            "bikesense_api_tile_render_seconds", "Query and rendering time of one tile",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.rate_limited = Counter(
            "bikesense_api_rate_limited", "Requests refused by the public rate limit",
            registry=self.registry)
        self.live_clients = Gauge(
            "bikesense_api_live_clients", "Connected Server-Sent Events clients",
            registry=self.registry)
        self.live_events = Counter(
            "bikesense_api_live_events", "Notifications received from the database",
            registry=self.registry)
        self.export_rows = Counter(
            "bikesense_api_export_bytes", "Bytes of raw-reading exports streamed",
            ["format"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def middleware(self, request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.latency.labels(template).observe(time.perf_counter() - start)
        self.requests.labels(request.method, template, str(response.status_code)).inc()
        return response
