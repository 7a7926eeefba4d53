"""``create_app``: keel's FastAPI application around one ``keel.App``.

One ``App`` per server process: its models, stores and telemetry are built
once and shared by every request (FastAPI runs the handlers in its thread
pool). Middleware, outermost first: HTTP metrics, request id, CORS (only when
``server.cors_origins`` is set), body size limit.

Swagger UI (``/docs``) and ReDoc (``/redoc``) are off: FastAPI loads them from a
CDN, which fails offline and tells a third party about every visit. The
OpenAPI document is served at ``/openapi.json``; load it into any viewer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from ..app import App
from ._auth import AuthPolicy
from ._errors import install_handlers
from ._keys import KeyStore
from ._metrics import MetricsMiddleware, http_metrics
from ._middleware import BodyLimit, RequestId
from ._openai import router as openai_router
from ._ratelimit import build_rate_limiter
from ._routes import ops, router

__all__ = ["UI_DIR", "create_app"]

UI_DIR = Path(__file__).parent / "ui"

_DESCRIPTION = """keel's HTTP API: questions answered with sources, route, cost and trace id;
approvals, feedback, traces, jobs; an OpenAI-compatible chat endpoint; metrics and probes.

Send `Authorization: Bearer <key>` (make one with `keel keys create NAME`) on every `/v1` route and
`/metrics`. Requests run as the key's name. Errors are `{"error": code, "message", "hint"}`
(OpenAI's shape on `/v1/chat/completions`)."""


def _lifespan(keel: App, workers: bool):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if workers:
            keel.jobs.start()  # the embedded backend's worker threads (no-op with Celery or jobs.workers: 0)
        try:
            yield
        finally:
            if "jobs" in keel.__dict__:
                keel.jobs.stop()
            if "telemetry" in keel.__dict__:
                keel.telemetry.close()  # spans, cost rows and audit records still queued; alert re-checks

    return lifespan


def create_app(app: App | None = None, *, host: str | None = None, keys: KeyStore | None = None,
               workers: bool = True) -> FastAPI:
    """The ASGI application. ``host`` is the address it is served on (default ``server.host``),
    which decides whether ``auth: auto`` asks for keys; ``workers`` runs the embedded job workers
    in this process while it serves. ``uvicorn --factory keel.server:create_app`` works too."""
    keel = app if app is not None else App()
    settings = keel.settings.server
    # FastAPI's own OpenTelemetry spans are off: keel's traces start at the keel.ask span (its trace id is the
    # answer's, and feedback reads the question from that root); a span per HTTP request would wrap it and
    # turn every probe and poll into a trace of its own
    off = {"tracing": False, "operation_spans": False, "metrics": False, "logs": False, "auto_configure": False}
    api = FastAPI(title="keel", version=_version(), description=_DESCRIPTION, telemetry=off,
                  lifespan=_lifespan(keel, workers), docs_url=None, redoc_url=None)  # no CDN: see above
    api.state.keel = keel
    metrics = http_metrics(keel.telemetry.metrics.registry)
    limiter = build_rate_limiter(keel.settings, on_reject=metrics.observe_rate_limited)
    api.state.auth = AuthPolicy(settings.auth, host or settings.host, keys or KeyStore.for_settings(keel.settings),
                                limiter)
    install_handlers(api)
    api.include_router(router)
    api.include_router(openai_router)
    api.include_router(ops)
    if settings.ui and UI_DIR.is_dir() and (UI_DIR / "index.html").is_file():
        api.mount("/", StaticFiles(directory=UI_DIR, html=True), name="ui")
    api.add_middleware(BodyLimit, max_bytes=settings.max_body_kb * 1024)
    if settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Keel-Session", "X-Keel-KB"],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
        )
    api.add_middleware(RequestId)
    api.add_middleware(MetricsMiddleware, metrics=metrics)
    return api


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel")
    except PackageNotFoundError:
        return "0"
