"""A graph-running request waits at most ``server.request_timeout_s``, then answers 504.

The graph bounds itself with ``limits.max_wall_s``, but checks it only between
steps: one model call that hangs (a stuck endpoint, a CPU starved by other
processes) can outlast it. The default timeout is ``max_wall_s + 30`` so the
graph's own limit (a 200 with ``"status": "stopped"``) normally comes first and
this 504 is the backstop. Python cannot stop a thread: a timed-out run goes on
in the background, finishes its trace and cost rows, and its answer is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from fastapi import Request

from ..errors import RequestTimeout

__all__ = ["request_timeout_s", "run_with_timeout"]

T = TypeVar("T")
log = logging.getLogger("keel.server")


def request_timeout_s(request: Request) -> float:
    settings = request.app.state.keel.settings
    return float(settings.server.timeout_s(settings.limits.max_wall_s))


async def run_with_timeout(request: Request, fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread; RequestTimeout (504) once the server's request timeout passes."""
    timeout = request_timeout_s(request)
    with anyio.move_on_after(timeout) as scope:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    assert scope.cancelled_caught
    log.warning("%s %s: no answer after %gs; the run goes on in the background, its answer is dropped",
                request.method, request.url.path, timeout)
    raise RequestTimeout(timeout)
