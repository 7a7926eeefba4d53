"""Readiness: can this process answer a question right now?

Each check returns ``{"ok": bool, "detail": str}``; ``/readyz`` is 503 with the
first failure's reason while any fails. The knowledge base is opened (and kept
open: this process owns the embedded store from then on) and the default chat
model's provider is asked whether it is available; no model is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ..app import App
from ._keys import KeyStore

__all__ = ["readiness"]


def _telemetry(app: App) -> str:
    if not app.telemetry.enabled:
        return "disabled"
    with app.telemetry.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    return "database reachable"


def _keys(keys: KeyStore) -> str:
    with keys.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    return "database reachable"


def _knowledge(app: App) -> str:
    kbs = app.knowledge.list_kbs()
    return f"{app.settings.knowledge.store} store open, {len(kbs)} knowledge base(s)"


def _model(app: App) -> str:
    name = app.settings.chain("chat")[0]
    provider = app.providers.get(name)
    if provider is None:
        raise RuntimeError(f"model {name!r} has no provider")
    ok, detail = provider.available()
    if not ok:
        raise RuntimeError(f"model {name!r} is not available: {detail}")
    return f"{name}: {detail}" if detail else name


def _run(check: Callable[[], str]) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": check()}
    except Exception as exc:  # a readiness probe reports every failure, it never raises
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return {"ok": False, "detail": message}


def readiness(app: App, keys: KeyStore) -> dict[str, dict[str, Any]]:
    return {
        "telemetry": _run(lambda: _telemetry(app)),
        "keys": _run(lambda: _keys(keys)),
        "knowledge": _run(lambda: _knowledge(app)),
        "model": _run(lambda: _model(app)),
    }
