"""Cooperative cancellation of one run: a token its caller sets, checked by the run at safe points.

Python cannot stop a thread. The HTTP server runs each graph run in a worker thread; when
nobody will read the answer any more (the request timed out, the client went away) it sets
the run's :class:`CancelToken`, and the run stops at its next safe point: before a graph node,
a model call (a gateway retry or fallback included) or a tool call. The embedded model checks
the token after every token it writes and stops there; a remote model or tool call already in
flight finishes, and is charged.

The runtime makes the token current for the length of the run (a context variable, which
LangGraph copies into every node it runs), so nodes, the gateway and tools take no extra
argument; a check is one context-variable read and one attribute read.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

from .errors import Cancelled

__all__ = ["CancelToken", "cancel_requested", "check_cancelled", "current", "sleep"]


class CancelToken:
    """Set once, from any thread (``cancel(reason)``); the run it was given to then stops with
    :class:`~keel.errors.Cancelled` at its next safe point. A token that is never set costs nothing."""

    __slots__ = ("_woken", "reason")

    def __init__(self) -> None:
        #: None until cancelled; then why ("timeout", "client_gone", or the caller's words)
        self.reason: str | None = None
        self._woken: threading.Event | None = None  # made by the first wait(): most runs never wait

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the run to stop; the first reason given is kept. Wakes a run waiting in :meth:`wait`."""
        if self.reason is None:
            self.reason = reason
        woken = self._woken  # read after the reason is set: see wait()
        if woken is not None:
            woken.set()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if the token is set meanwhile."""
        woken = self._woken
        if woken is None:
            woken = self._woken = threading.Event()
        if self.reason is None:  # checked after the event exists, so a cancel() now still wakes us
            woken.wait(seconds)

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


def sleep(seconds: float) -> None:
    """``time.sleep`` that a cancelled run wakes from (the gateway's wait between retries)."""
    token = current.get()
    if token is None:
        time.sleep(seconds)
    else:
        token.wait(seconds)


def cancel_requested() -> bool:
    """Whether the current run's token was set (for a loop that stops between steps itself)."""
    token = current.get()
    return token is not None and token.reason is not None
