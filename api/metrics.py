"""Prometheus metrics of one API instance, in its own registry (no global state).

:class:`RequestMetrics` counts requests as a plain ASGI middleware, not
Starlette's ``BaseHTTPMiddleware``: that one re-sends a streamed body through
a stream of its own and ends it properly even when the app failed mid-body,
so an export cut short by a database failure reached the client as a
complete response. This one passes every message on as it is, and an
exception on, so the server aborts the connection.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Methods counted by name; any other is counted as "other", so that clients cannot grow
#: the label set without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Tile budget is 50 ms at p95 (docs/design.md), so the buckets are fine below 0.1 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bikesense_api_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bikesense_api_request_seconds",
            "Time to the response head, by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tile_render = Histogram(
            "bikesense_api_tile_render_seconds",
            "Query and rendering time of one tile",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "bikesense_api_rate_limited",
            "Requests refused by the public rate limit",
            registry=self.registry,
        )
        self.live_clients = Gauge(
            "bikesense_api_live_clients",
            "Connected Server-Sent Events clients",
            registry=self.registry,
        )
        self.live_events = Counter(
            "bikesense_api_live_events",
            "Notifications received from the database",
            registry=self.registry,
        )
        self.export_rows = Counter(
            "bikesense_api_export_bytes",
            "Bytes of raw-reading exports streamed",
            ["format"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route(scope: Scope) -> str:
    """The route template the router matched, or "unmatched"."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class RequestMetrics:
    """ASGI middleware: requests by method, route template and status; time to the
    response head by route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "other"
        head_sent = False

        async def send_counted(message: Message) -> None:
            nonlocal head_sent
            if message["type"] == "http.response.start":
                head_sent = True
                route = _route(scope)
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
                self.metrics.requests.labels(method, route, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            if not head_sent:  # the server answers 500
                self.metrics.requests.labels(method, _route(scope), "500").inc()
            raise
