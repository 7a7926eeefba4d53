"""``keel serve``: uvicorn around ``keel.App``: one process, or ``server.workers`` of them.

One process (the default) serves the ``App`` it is given. With more, uvicorn
starts that many processes, and each builds its own ``App`` from keel.yaml and
``KEEL_*`` (``keel.server:create_app`` as a factory): each loads its own chat
model (memory and CPU threads times N), so on a small machine one process with
FastAPI's thread pool is usually faster. The embedded knowledge store belongs
to one process, so more than one needs ``knowledge.store: server``.

On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets requests in
flight finish for up to ``server.shutdown_timeout_s``, then runs the app's
shutdown (job workers stopped, telemetry flushed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from ..app import App
from ..errors import ConfigError
from ._app import create_app
from ._auth import is_loopback
from ._keys import KeyStore

__all__ = ["serve"]


def serve(
    app: App,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    config: Path | None = None,
    log_level: str = "info",
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``app`` until interrupted. Raises ConfigError before binding when keys are needed but none exist,
    or when several worker processes would share the embedded knowledge store. ``config`` is the keel.yaml
    the worker processes load (default: KEEL_CONFIG, else ./keel.yaml)."""
    import uvicorn

    settings = app.settings.server
    host = host or settings.host
    port = port if port is not None else settings.port
    workers = workers or settings.workers
    if workers > 1 and app.settings.knowledge.store == "embedded":
        raise ConfigError(
            f"{workers} server processes cannot share the embedded knowledge store: one process holds it",
            hint="run one process (its thread pool serves requests concurrently), or set knowledge.store: server",
        )
    keys = KeyStore.for_settings(app.settings)
    api = create_app(app, host=host, keys=keys, workers=workers == 1)
    policy = api.state.auth
    policy.check_startable()
    shown = f"[{host}]" if ":" in host else host
    auth = "API key required" if policy.required() else ("off" if settings.auth == "off" else "no keys yet (loopback)")
    processes = f"; {workers} processes" if workers > 1 else ""
    announce(f"keel serving on http://{shown}:{port}  (auth: {auth}; OpenAPI: /openapi.json{processes})")
    if not is_loopback(host) and settings.auth == "off":
        announce("warning: server.auth is off on a network address: anyone who can reach it can use it")
    options = {"host": host, "port": port, "log_level": log_level, "proxy_headers": False,
               "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout_s)}
    if workers == 1:
        uvicorn.run(api, **options)  # type: ignore[arg-type]
        return
    # each process builds its App from the same configuration; host decides `auth: auto` there
    os.environ["KEEL_SERVER__HOST"] = host
    if config is not None:
        os.environ["KEEL_CONFIG"] = str(Path(config).resolve())
    uvicorn.run("keel.server:create_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
