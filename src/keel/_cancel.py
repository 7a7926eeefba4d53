"""Cooperative cancellation of one run: a token its caller sets, checked by the run at safe points.

Python cannot stop a thread. The HTTP server runs each graph run in a worker thread; when
nobody will read the answer any more (the request timed out, the client went away) it sets
the run's :class:`CancelToken`, and the run stops at its next safe point: before a graph node,
a model call (a gateway retry or fallback included) or a tool call. A call already in flight
finishes, and is charged.

The runtime makes the token current for the length of the run (a context variable, which
LangGraph copies into every node it runs), so nodes, the gateway and tools take no extra
argument; a check is one context-variable read and one attribute read.
"""

from __future__ import annotations

from contextvars import ContextVar

from .errors import Cancelled

__all__ = ["CancelToken", "cancel_requested", "check_cancelled", "current"]


class CancelToken:
    """Set once, from any thread (``cancel(reason)``); the run it was given to then stops with
    :class:`~keel.errors.Cancelled` at its next safe point. A token that is never set costs nothing."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        #: None until cancelled; then why ("timeout", "client_gone", or the caller's words)
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the run to stop; the first reason given is kept."""
        if self.reason is None:
            self.reason = reason

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def __repr__(self) -> str:
        return f"CancelToken(reason={self.reason!r})"


#: the token of the run this context is doing (None outside a cancellable run)
current: ContextVar[CancelToken | None] = ContextVar("keel_cancel", default=None)


def check_cancelled() -> None:
    """Raise Cancelled if the current run's token was set; a no-op outside a cancellable run."""
    token = current.get()
    if token is not None and token.reason is not None:
        raise Cancelled(token.reason)


def cancel_requested() -> bool:
    """Whether the current run's token was set (for a loop that stops between steps itself)."""
    token = current.get()
    return token is not None and token.reason is not None
