"""A cancelled run stops at its next node, model call or tool call, and leaves its state whole.

The runtime on a scripted model (the graph tests' Harness); the token is set from inside the
model call that is in flight, as the server sets it from another thread while a call runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from keel import CancelToken
from keel._cancel import current
from keel.errors import Cancelled, ModelUnavailable
from keel.graph.nodes_agent import run_tools
from keel.telemetry.budgets import build_budgets

from .test_graph_flow import WITH_ANSWER, Harness, call, final

LOOP = "keep calculating things for me forever, step by step"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def calculator_steps(token: CancelToken | None = None, *, cancel_on: int = 0) -> Any:
    """agent_step replies that never finish; the ``cancel_on``-th call (1-based) sets ``token``."""
    steps = itertools.count(1)

    def step(request: Any) -> str:
        n = next(steps)
        if token is not None and n == cancel_on:
            token.cancel("timeout")
        return call("calculator", expression=f"1+{n}")

    return step


def spans(h: Harness) -> dict[str, Any]:
    return {s.name: s for s in h.exporter.get_finished_spans()}


def test_a_token_that_is_never_set_changes_nothing(home: Path) -> None:
    plain = Harness(home / "a", {"answer": [WITH_ANSWER]})
    tokened = Harness(home / "b", {"answer": [WITH_ANSWER]})
    question = "what does the with statement do?"
    without = plain.runtime.ask(question, session="plain").to_dict()
    with_token = tokened.runtime.ask(question, session="tokened", cancel=CancelToken()).to_dict()
    for body in (without, with_token):
        body.pop("trace_id"), body.pop("latency_ms")
    assert with_token == without and with_token["status"] == "answered"
    assert tokened.event_names() == plain.event_names() and "cancelled" not in tokened.event_names()
    assert sorted(spans(tokened)) == sorted(spans(plain))


def test_a_token_set_before_the_run_stops_it_before_its_first_node(home: Path) -> None:
    h = Harness(home, {"answer": [WITH_ANSWER]})
    token = CancelToken()
    token.cancel("client_gone")
    answer = h.runtime.ask("what does the with statement do?", cancel=token)
    assert (answer.status, answer.answer, answer.error) == ("stopped", "", {
        "error": "cancelled", "message": "the run was cancelled: its client went away",
        "hint": "nobody was waiting for its answer; ask again, or use POST /v1/jobs for long work"})
    assert isinstance(answer.exception, Cancelled) and answer.exception.reason == "client_gone"
    assert answer.exception.exit_code == 130 and answer.exception.http_status == 499
    assert h.provider.requests == [] and h.retriever.calls == []
    assert h.events == [("cancelled", {"thread_id": answer.run_id, "reason": "client_gone", **answer.error})]
    root = spans(h)["keel.ask"]
    assert (root.status.status_code.name, root.status.description) == ("ERROR", answer.error["message"])
    assert "keel.guard.input" not in spans(h)  # no node started


def test_a_run_cancelled_during_a_model_call_makes_no_further_call_and_runs_no_tool(home: Path) -> None:
    token = CancelToken()
    h = Harness(home, {"agent_step": calculator_steps(token, cancel_on=2)})
    answer = h.runtime.ask(LOOP, cancel=token)
    assert answer.status == "stopped" and answer.error["error"] == "cancelled"  # type: ignore[index]
    assert h.purposes() == ["agent_step", "agent_step"]  # the call in flight finished; none after it
    assert answer.usage["model_calls"] == 2
    assert h.event_names()[-4:] == ["agent_step", "tool_call", "agent_step", "cancelled"]  # step 2's tool never ran
    assert spans(h)["keel.ask"].status.status_code.name == "ERROR"


def test_without_a_token_the_same_run_goes_on_to_its_step_limit(home: Path) -> None:
    h = Harness(home, {"agent_step": calculator_steps()})
    answer = h.runtime.ask(LOOP, cancel=CancelToken())
    assert answer.error["error"] == "limit_exceeded"  # type: ignore[index]
    assert h.purposes().count("agent_step") == h.settings.limits.max_steps


def test_the_gateway_makes_no_retry_or_fallback_for_a_cancelled_run(home: Path) -> None:
    token = CancelToken()

    def failing(request: Any) -> Any:
        token.cancel("timeout")
        return ModelUnavailable("the endpoint is down", model="fake")  # retryable: the gateway would retry

    h = Harness(home, {"agent_step": failing})
    h.gateway._sleep = lambda seconds: None
    answer = h.runtime.ask(LOOP, cancel=token)
    assert answer.error["error"] == "cancelled" and len(h.provider.requests) == 1  # type: ignore[index]
    uncancelled = Harness(home / "again", {"agent_step": lambda r: ModelUnavailable("down", model="fake")})
    uncancelled.gateway._sleep = lambda seconds: None
    with pytest.raises(ModelUnavailable):
        uncancelled.runtime.ask(LOOP, cancel=CancelToken())
    assert len(uncancelled.provider.requests) > 1  # the retries that a cancelled run does not make


def test_a_run_waiting_to_retry_wakes_when_cancelled(home: Path) -> None:
    import threading
    import time

    token = CancelToken()
    waiting = threading.Event()

    def failing(request: Any) -> Any:
        waiting.set()
        return ModelUnavailable("the endpoint is down", model="fake")  # retryable: the gateway waits, then retries

    h = Harness(home, {"agent_step": failing})
    h.gateway.settings = h.gateway.settings.model_copy(update={"backoff_base_s": 30.0, "backoff_max_s": 30.0})
    h.gateway._rng = type("Longest", (), {"uniform": staticmethod(lambda low, high: high)})()  # a 30 s wait
    threading.Thread(target=lambda: (waiting.wait(10), time.sleep(0.2), token.cancel("client_gone"))).start()
    started = time.monotonic()
    answer = h.runtime.ask(LOOP, cancel=token)
    assert time.monotonic() - started < 10  # not the 30 s backoff
    assert answer.error["error"] == "cancelled" and len(h.provider.requests) == 1  # type: ignore[index]


def test_the_token_wait_is_woken_by_a_cancel_from_another_thread() -> None:
    import threading
    import time

    token = CancelToken()
    threading.Timer(0.1, token.cancel, args=("timeout",)).start()
    started = time.monotonic()
    token.wait(30)
    assert time.monotonic() - started < 10 and token.reason == "timeout"
    token.wait(30)  # already cancelled: returns at once
    assert time.monotonic() - started < 10


def test_the_router_lets_a_cancellation_through_its_judge(home: Path) -> None:
    h = Harness(home, {}, router={"judge_below": 1.0})

    def judge(question: str) -> tuple[str, str]:
        raise Cancelled("timeout")

    with pytest.raises(Cancelled):  # not "judge failed", which would keep the run going
        h.runtime.deps.router.decide("tell me about the weather", judge=judge)


def test_a_call_that_raises_when_cancelled_holds_no_budget(home: Path) -> None:
    """What happens when a node raises mid-call: the gateway settles the call's reservation at zero."""
    token = CancelToken()
    h = Harness(home, {}, prices=True, limits={"max_cost_usd": 100.0},
                budgets={"limits": [{"scope": "user", "usd": 100.0}]})
    budget = h.gateway.budget = build_budgets(h.settings)
    held: list[float] = []

    def step(request: Any) -> Any:
        held.append(budget.usage({"user_id": "ann"})[0]["reserved_usd"])
        token.cancel("client_gone")
        return Cancelled("client_gone")  # a provider that gives up its call when the run is cancelled

    h.provider.fn = step
    answer = h.runtime.ask(LOOP, user="ann", cancel=token)
    assert answer.error["error"] == "cancelled" and held[0] > 0  # type: ignore[index]
    [row] = budget.usage({"user_id": "ann"})
    assert (row["reserved_usd"], row["spent_usd"]) == (0, 0)


def test_a_cancelled_session_goes_on_with_its_finished_turns(home: Path) -> None:
    token = CancelToken()
    h = Harness(home, {"answer": [WITH_ANSWER], "agent_step": calculator_steps(token, cancel_on=1)})
    assert h.runtime.ask("what does the with statement do?", session="s1").status == "answered"
    assert h.runtime.ask(LOOP, session="s1", cancel=token).error["error"] == "cancelled"  # type: ignore[index]
    assert h.runtime._pending_interrupt("s1") is None
    after = h.runtime.ask("what does the with statement do?", session="s1")
    assert after.status == "answered"
    history = h.runtime.graph.get_state(h.runtime._config("s1")).values["history"]
    assert [turn["question"] for turn in history] == ["what does the with statement do?"] * 2


def _pause_delete(h: Harness) -> str:
    (h.workspace / "notes.txt").write_text("my notes")
    paused = h.runtime.ask("delete notes.txt in the workspace", user="ann")
    assert paused.status == "pending_approval"
    return paused.approval["id"]  # type: ignore[index,no-any-return]


def test_a_resume_cancelled_before_the_decision_changes_nothing(home: Path) -> None:
    h = Harness(home, {"agent_step": [final("I deleted notes.txt.")]})
    approval_id = _pause_delete(h)
    token = CancelToken()
    token.cancel("timeout")
    with pytest.raises(Cancelled):
        h.runtime.resume(approval_id, approve=True, approver="boss", cancel=token)
    assert h.runtime.deps.approvals.get(approval_id).status == "pending" and (h.workspace / "notes.txt").exists()
    assert h.events[-1] == ("cancelled", {"approval_id": approval_id, "reason": "timeout"})
    done = h.runtime.resume(approval_id, approve=True, approver="boss")
    assert done.status == "answered" and not (h.workspace / "notes.txt").exists()


def test_a_resume_cancelled_after_the_decision_carries_it_out_then_stops(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(home, {"agent_step": [final("I deleted notes.txt.")]})
    approval_id = _pause_delete(h)
    token = CancelToken()
    store = h.runtime.deps.approvals
    decide = store.decide

    def decide_then_cancel(*args: Any, **kwargs: Any) -> Any:
        record = decide(*args, **kwargs)
        token.cancel("timeout")  # the server stops waiting right after the decision is recorded
        return record

    monkeypatch.setattr(store, "decide", decide_then_cancel)
    answer = h.runtime.resume(approval_id, approve=True, approver="boss", cancel=token)
    assert answer.error["error"] == "cancelled"  # type: ignore[index]
    assert not (h.workspace / "notes.txt").exists() and store.get(approval_id).status == "used"
    assert h.event_names()[-3:] == ["approval_used", "tool_call", "cancelled"] and h.provider.requests == []
    assert h.runtime._pending_interrupt(answer.run_id) is None  # ended, not left half-paused


def test_tools_stop_between_calls_keeping_the_one_that_ran(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(home, {})
    token = CancelToken()
    tools = h.runtime.deps.tools
    run = tools.run

    def run_then_cancel(*args: Any, **kwargs: Any) -> Any:
        result = run(*args, **kwargs)
        token.cancel("timeout")  # the server stops waiting while the first call runs
        return result

    monkeypatch.setattr(tools, "run", run_then_cancel)
    calls = [{"id": f"c{n}", "name": "calculator", "arguments": {"expression": f"1+{n}"}} for n in (1, 2)]
    bound = current.set(token)
    try:
        update = run_tools({"request_id": "r", "thread_id": "t", "pending": calls}, h.runtime.deps)
    finally:
        current.reset(bound)
    assert [entry["id"] for entry in update["tool_log"]] == ["c1"] and update["pending"] == calls[1:]
