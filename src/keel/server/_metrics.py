"""HTTP series in the App's Prometheus registry, served with keel's own at ``/metrics``.

    keel_http_requests_total{method, route, status}       responses sent
    keel_http_request_duration_seconds{method, route}     until the last byte (a whole SSE stream)
    keel_http_requests_in_flight                           requests being handled now
    keel_http_rate_limited_total{caller}                   429s from server.rate_limit (caller: key or ip)

``route`` is the matched route's template (``/v1/jobs/{job_id}``), never the raw
path, so ids cannot multiply the series; a request no route matches is
``unmatched``, the web UI's files are ``/{path}``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetrics", "MetricsMiddleware", "http_metrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("keel_http_requests", "HTTP responses sent", ["method", "route", "status"],
                                registry=registry)
        self.duration = Histogram("keel_http_request_duration_seconds", "HTTP request duration, to the last byte",
                                  ["method", "route"], buckets=_BUCKETS, registry=registry)
        self.in_flight = Gauge("keel_http_requests_in_flight", "HTTP requests being handled", registry=registry)
        self.rate_limited = Counter("keel_http_rate_limited", "Requests refused by server.rate_limit", ["caller"],
                                    registry=registry)

    def observe_rate_limited(self, caller: str) -> None:
        self.rate_limited.labels(caller).inc()


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = weakref.WeakKeyDictionary()


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    """The HTTP series of ``registry``, registered once (several apps may serve one keel.App)."""
    found = _by_registry.get(registry)
    if found is None:
        found = _by_registry[registry] = HttpMetrics(registry)
    return found


def _flat(routes: Any) -> Iterator[Any]:
    """Every route, with those of included routers (FastAPI wraps them) taken out of their wrappers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _flat(inner.routes) if inner is not None else (route,)


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope``, or, for a request refused before routing
    (a body over the size limit), of the route that would have."""
    route = scope.get("route")
    if route is None:
        for candidate in _flat(getattr(scope.get("app"), "routes", ())):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    if route is None:
        return "unmatched"
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    return str(getattr(route, "path", "unmatched"))


class MetricsMiddleware:
    """Count every HTTP response by method, route template and status; time it; track the in-flight."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500 from the server
        self.metrics.in_flight.inc()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.in_flight.dec()
            labels: Any = (scope["method"], route_template(scope))
            self.metrics.requests.labels(*labels, str(status)).inc()
            self.metrics.duration.labels(*labels).observe(time.perf_counter() - started)
