"""A graph-running request waits at most ``server.request_timeout_s``, then answers 504; its run stops.

The graph bounds itself with ``limits.max_wall_s``, but checks it only between
steps: one model call that hangs (a stuck endpoint, a CPU starved by other
processes) can outlast it. The default timeout is ``max_wall_s + 30`` so the
graph's own limit (a 200 with ``"status": "stopped"``) normally comes first and
this 504 is the backstop.

Python cannot stop a thread, so the run is cancelled cooperatively: it gets a
:class:`~keel.CancelToken`, set when the request times out, when its client goes
away (polled every :data:`POLL_S` once the run has lasted that long) or when the
request itself is cancelled. The run then stops at its next node, model call or
tool call (a call in flight finishes) and records ``cancelled`` in the audit
ledger. A run that ends before the first poll costs one timer, set and cancelled,
as the plain timeout did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from fastapi import Request

from .._cancel import CancelToken
from ..errors import Cancelled, RequestTimeout

__all__ = ["POLL_S", "request_timeout_s", "run_with_timeout"]

T = TypeVar("T")
log = logging.getLogger("keel.server")

#: seconds between checks that a running request's client is still connected
POLL_S = 0.25


def request_timeout_s(request: Request) -> float:
    settings = request.app.state.keel.settings
    return float(settings.server.timeout_s(settings.limits.max_wall_s))


class _Watch:
    """Wakes once the run has lasted POLL_S (or the whole timeout, if shorter), then every POLL_S:
    past the deadline, or with the client gone, it sets the run's token and cancels the scope the
    request waits in. It is the request's only timer (the scope has no deadline of its own)."""

    __slots__ = ("cancel", "deadline", "request", "scope", "_loop", "_task", "_timer")

    def __init__(self, request: Request, cancel: CancelToken, scope: anyio.CancelScope, timeout: float) -> None:
        self.request, self.cancel, self.scope = request, cancel, scope
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + timeout
        self._task: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(min(POLL_S, timeout), self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            if self._loop.time() >= self.deadline:
                reason = "timeout"
                break
            if await self._client_gone():
                reason = "client_gone"
                break
            await asyncio.sleep(min(POLL_S, self.deadline - self._loop.time()))
        self.cancel.cancel(reason)
        self.scope.cancel()

    async def _client_gone(self) -> bool:
        try:
            return await self.request.is_disconnected()
        except Exception:  # a receive channel that fails cannot say; the deadline still holds
            return False

    def close(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def run_with_timeout(request: Request, fn: Callable[[CancelToken], T]) -> T:
    """``fn(token)`` in a worker thread; RequestTimeout (504) once the server's request timeout passes,
    Cancelled (499, which nobody receives) when the client goes away. Either way, and when the
    request itself is cancelled, the token is set first, so the run stops."""
    cancel = CancelToken()
    timeout = request_timeout_s(request)
    watch: _Watch | None = None
    try:
        with anyio.CancelScope() as scope:
            watch = _Watch(request, cancel, scope, timeout)
            return await anyio.to_thread.run_sync(fn, cancel, abandon_on_cancel=True)
    except asyncio.CancelledError:
        cancel.cancel("client_gone")  # the request's own task was cancelled: nobody waits for the answer
        raise
    finally:
        if watch is not None:
            watch.close()
    # here the watch cancelled the scope, and said why
    if cancel.reason == "client_gone":
        log.info("%s %s: the client went away; its run is cancelled", request.method, request.url.path)
        raise Cancelled("client_gone")
    log.warning("%s %s: no answer after %gs; its run is cancelled", request.method, request.url.path, timeout)
    raise RequestTimeout(timeout)
