"""Run cases through ``App.ask``: bounded concurrency, a timeout per case, nothing aborts the run.

Each case runs on its own daemon thread; at most ``concurrency`` run at once
(1 by default: the embedded model answers one prompt at a time anyway). A case
that raises becomes a failed row carrying the error; a case that outlives
``timeout_s`` is recorded as timed out and the run moves on. Python cannot
interrupt a model call in progress, so that call is abandoned, not stopped:
keep ``limits.max_wall_s`` below the timeout so the graph stops it itself.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import KeelError
from .dataset import EvalCase
from .metrics import CaseResult, score_case

__all__ = ["Asker", "RunOptions", "run_cases"]


class Asker(Protocol):
    """What the runner needs of ``keel.App``: ``ask(question, kb=...) -> Answer``."""

    def ask(self, question: str, *, kb: str | None = None) -> Any: ...


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 1
    #: seconds one case may take before it is recorded as timed out
    timeout_s: float = 300.0
    #: sources considered for hit@k, recall@k and MRR
    k: int = 5
    #: token F1 at which an answer counts as matching ``expected_answer``
    f1_threshold: float = 0.5
    #: the knowledge base for cases that name none (None: the App's default)
    kb: str | None = None


#: called after each case: (done, total, result)
OnResult = Callable[[int, int, CaseResult], None]
#: optional extra scoring after a case ran (the LLM judge): (case, result, answer as a dict) -> None
Enrich = Callable[[EvalCase, CaseResult, dict[str, Any]], None]


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, KeelError):
        return exc.to_dict()
    return {"error": type(exc).__name__, "message": str(exc) or type(exc).__name__, "hint": None}


def _ask(app: Asker, case: EvalCase, options: RunOptions) -> dict[str, Any]:
    answer = app.ask(case.question, kb=case.kb or options.kb)
    return answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)


def run_cases(app: Asker, cases: list[EvalCase], options: RunOptions | None = None, *,
              on_result: OnResult | None = None, enrich: Enrich | None = None) -> list[CaseResult]:
    """Every case, scored, in dataset order (whatever order they finished in)."""
    opts = options or RunOptions()
    if opts.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    done: queue.Queue[tuple[int, dict[str, Any] | None, dict[str, Any] | None]] = queue.Queue()
    results: dict[int, CaseResult] = {}
    running: dict[int, float] = {}  # case index -> deadline (monotonic)
    todo = list(range(len(cases)))
    todo.reverse()

    def work(i: int) -> None:
        try:
            done.put((i, _ask(app, cases[i], opts), None))
        except BaseException as exc:  # one bad case never aborts the run
            done.put((i, None, _error(exc)))

    def finish(i: int, answer: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        result = score_case(cases[i], answer, k=opts.k, f1_threshold=opts.f1_threshold, error=error)
        if enrich is not None and answer is not None:
            try:
                enrich(cases[i], result, answer)
            except Exception as exc:  # a failing judge marks its row, never the run
                result.judge = {"score": None, "why": f"judge failed: {exc}"}
        results[i] = result
        if on_result is not None:
            on_result(len(results), len(cases), result)

    while todo or running:
        while todo and len(running) < opts.concurrency:
            i = todo.pop()
            running[i] = time.monotonic() + opts.timeout_s
            threading.Thread(target=work, args=(i,), name=f"keel-eval-{cases[i].id}", daemon=True).start()
        wait = max(0.0, min(running.values()) - time.monotonic())
        try:
            i, answer, error = done.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for late in [j for j, deadline in running.items() if deadline <= now]:
                del running[late]
                finish(late, None, {"error": "timeout", "hint": "raise --timeout, or set limits.max_wall_s below it",
                                    "message": f"the case took longer than {opts.timeout_s:g} s"})
            continue
        if i in running:  # a timed-out case that finished late is already recorded
            del running[i]
            finish(i, answer, error)
    return [results[i] for i in range(len(cases))]
