"""Ctrl-C while a command runs the graph: the first stops the run, a second quits at once.

The run goes in a thread of its own while this one waits, so a signal is handled at once even
while the run sits in a model call. The first SIGINT sets the run's :class:`~keel.CancelToken`:
the run stops at its next node, model call or tool call (a call in flight finishes), ends as a
stopped answer with the ``cancelled`` error (exit 130) and one ``cancelled`` audit record. A
second SIGINT exits 130 at once, without waiting for the call in flight: what the run had not
written yet (its trace, its audit records) is lost.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

from .._cancel import CancelToken
from ._common import err_console

__all__ = ["run_interruptible"]

T = TypeVar("T")


def run_interruptible(run: Callable[..., T]) -> T:
    """``run(cancel=token)`` (``App.ask`` and the like); the first Ctrl-C sets the token, the second
    exits 130 at once."""
    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        return run(cancel=token)  # only the main thread receives signals: there is no Ctrl-C to handle here
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = run(cancel=token)
        except BaseException as exc:  # handed to the main thread, raised there as if the run ran there
            outcome["error"] = exc

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if token.cancelled:
            _quit_now()
        token.cancel("interrupted")
        err_console.print("stopping the run at its next step (Ctrl-C again to quit now)", markup=False,
                          highlight=False)

    worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="keel-run", daemon=True)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
    finally:
        signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _quit_now() -> NoReturn:
    err_console.print("interrupted", markup=False, highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
