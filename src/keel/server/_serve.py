"""``keel serve``: one uvicorn process around one ``keel.App``."""

from __future__ import annotations

from collections.abc import Callable

from ..app import App
from ._app import create_app
from ._auth import is_loopback
from ._keys import KeyStore

__all__ = ["serve"]


def serve(
    app: App,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``app`` until interrupted. Raises ConfigError before binding when keys are needed but none exist."""
    import uvicorn

    settings = app.settings.server
    host = host or settings.host
    port = port if port is not None else settings.port
    keys = KeyStore.for_settings(app.settings)
    api = create_app(app, host=host, keys=keys)
    policy = api.state.auth
    policy.check_startable()
    shown = f"[{host}]" if ":" in host else host
    auth = "API key required" if policy.required() else ("off" if settings.auth == "off" else "no keys yet (loopback)")
    announce(f"keel serving on http://{shown}:{port}  (auth: {auth}; API docs: /docs)")
    if not is_loopback(host) and settings.auth == "off":
        announce("warning: server.auth is off on a network address: anyone who can reach it can use it")
    uvicorn.run(api, host=host, port=port, log_level=log_level, proxy_headers=False, timeout_graceful_shutdown=30)
