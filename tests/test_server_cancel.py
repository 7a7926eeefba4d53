"""A request that timed out, or whose client went away, stops its run.

The server's ASGI app in process: the timeout through Starlette's TestClient; the client that
leaves through a hand-driven ASGI call whose ``receive`` says ``http.disconnect`` on cue (the
test clients only say it once the response is complete). The model holds its call until the
test lets it go, so the run is mid-call when the server gives up on it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.graph import by_purpose
from keel.models.base import ChatRequest
from keel.models.fake import FunctionProvider
from keel.server import create_app

from .test_server_api import REPLY, ScriptedApp

LOOP = "keep calculating things for me forever, step by step"
#: dollars per output token; input is free, so a call's worst case is its max_tokens times this
PER_TOKEN = 0.001
#: agent_step's worst case is 200 tokens (0.2), the answer's 160 (0.16): one call fits, two do not
BUDGET = 0.3
ENDPOINTS = ["ask", "chat", "stream"]


class HeldModel:
    """A scripted model that holds a call while the test says so, and counts every call it gets."""

    def __init__(self) -> None:
        self.purposes: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._hold = False
        self._lock = threading.Lock()
        self._step = 0
        self._reply = by_purpose({"answer": [REPLY], "agent_step": self._agent_step})

    def _agent_step(self, request: ChatRequest) -> str:
        if "delete" in request.messages[1].content:
            return "Done: deleted notes.txt."
        self._step += 1
        return json.dumps({"tool": "calculator", "args": {"expression": f"1+{self._step}"}})  # never done

    def hold_next(self) -> None:
        self.entered.clear()
        self.release.clear()
        self._hold = True

    def __call__(self, request: ChatRequest) -> str:
        with self._lock:
            self.purposes.append(request.metadata["purpose"])
            hold, self._hold = self._hold, False
        if hold:
            self.entered.set()
            assert self.release.wait(30)
        return self._reply(request)  # type: ignore[no-any-return]


def held_app(model: HeldModel, **settings: Any) -> ScriptedApp:
    """An App on the held model, answering 504 after two seconds. It has answered one question
    already (as another user, not over HTTP, and not counted), so it is built and warm: a request
    reaches the model well within the timeout (about 50 ms here; a CI run once took over 0.5 s)."""
    settings.setdefault("server", {"request_timeout_s": 2})
    app = ScriptedApp(
        providers={"held": FunctionProvider(model, name="held")},
        models={"held": {"provider": "fake", "input_price_per_mtok": 0.0, "output_price_per_mtok": PER_TOKEN * 1e6}},
        roles={"chat": ["held"], "fast": ["held"]},
        gateway={"cache": {"enabled": False}},
        limits={"max_cost_usd": 100.0},
        budgets={"limits": [{"scope": "user", "usd": BUDGET}]},
        **settings,
    )
    assert app.ask("What is Python?", user="warmup").status == "answered"
    model.purposes.clear()
    return app


def request_of(endpoint: str, question: str, user: str = "ann") -> tuple[str, dict[str, Any]]:
    if endpoint == "ask":
        return "/v1/ask", {"question": question, "user": user}
    body = {"model": "keel", "messages": [{"role": "user", "content": question}], "user": user}
    return "/v1/chat/completions", {**body, "stream": endpoint == "stream"}


def post(client: TestClient, endpoint: str, question: str, user: str = "ann") -> Any:
    path, body = request_of(endpoint, question, user)
    return client.post(path, json=body)


def audit(app: ScriptedApp, event: str) -> list[dict[str, Any]]:
    app.telemetry.flush()
    return [r.data for r in app.telemetry.audit.records() if r.event == event]


def wait_for_cancelled(app: ScriptedApp) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = audit(app, "cancelled")
        if found:
            [record] = found
            return record
        time.sleep(0.05)
    raise AssertionError("the run never recorded that it was cancelled")


def reserved(app: ScriptedApp, user: str = "ann") -> float:
    [row] = app.budget.usage({"user_id": user})  # type: ignore[attr-defined]
    return float(row["reserved_usd"])


def assert_budget_whole_again(app: ScriptedApp, client: TestClient, model: HeldModel) -> None:
    """The cancelled run holds nothing: a budget that fits one call answers the next question."""
    assert reserved(app) == 0
    again = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"})
    assert (again.status_code, again.json()["status"]) == (200, "answered")
    assert model.purposes == ["agent_step", "answer"]


def latest_root_status(app: ScriptedApp) -> str:
    app.telemetry.flush()
    [summary] = app.telemetry.traces.list(limit=1)
    return summary.status  # type: ignore[no-any-return]


# -- the request timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_timed_out_run_makes_no_model_call_after_the_504_and_frees_its_budget(
    workspace: Path, endpoint: str
) -> None:
    model = HeldModel()
    app = held_app(model)
    with TestClient(create_app(app, workers=False)) as client:
        model.hold_next()
        try:
            r = post(client, endpoint, LOOP)
            assert model.entered.is_set()
            if endpoint == "stream":
                assert '"code": "request_timeout"' in r.text and '"status": 504' in r.text
            elif endpoint == "chat":
                assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
            else:
                assert r.status_code == 504 and r.json() == {
                    "error": "request_timeout", "message": "no answer within the server's request timeout of 2s",
                    "hint": r.json()["hint"]}
            # the call in flight still holds its reservation: a second call does not fit the budget
            refused = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"})
            assert (refused.status_code, refused.json()["error"]) == (429, "budget_exceeded")
        finally:
            model.release.set()
        record = wait_for_cancelled(app)
        assert (record["reason"], record["error"]) == ("timeout", "cancelled")
        assert model.purposes == ["agent_step"]  # the held call finished; the run made none after it
        assert audit(app, "tool_call") == []  # nor ran the tool that call asked for
        assert latest_root_status(app) == "error"
        assert_budget_whole_again(app, client, model)


def test_an_uncancelled_run_is_unchanged(workspace: Path) -> None:
    model = HeldModel()
    app = held_app(model, server={"request_timeout_s": 30})
    with TestClient(create_app(app, workers=False)) as client:
        r = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"})
        streamed = post(client, "stream", "What is Python?")
    assert (r.status_code, r.json()["status"], r.json()["answer"]) == (200, "answered", REPLY)
    assert "Guido" in streamed.text and streamed.text.rstrip().endswith("data: [DONE]")
    assert model.purposes == ["answer", "answer"] and audit(app, "cancelled") == [] and reserved(app) == 0


# -- the client that goes away ---------------------------------------------------------------------


def leave_mid_run(api: FastAPI, path: str, body: dict[str, Any], model: HeldModel) -> list[dict[str, Any]]:
    """POST ``body`` straight to the ASGI app; once the model holds its call, the client disconnects.
    Returns what the app sent, after it finished with the request."""
    payload = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    state = {"body_read": False}

    async def receive() -> dict[str, Any]:
        if not state["body_read"]:
            state["body_read"] = True
            return {"type": "http.request", "body": payload, "more_body": False}
        while not model.entered.is_set():
            await asyncio.sleep(0.02)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    asyncio.run(asyncio.wait_for(api(scope, receive, send), 20))  # type: ignore[arg-type]
    return sent


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_client_that_leaves_mid_run_stops_it(workspace: Path, endpoint: str) -> None:
    model = HeldModel()
    app = held_app(model, server={"request_timeout_s": 30})
    api = create_app(app, workers=False)
    path, body = request_of(endpoint, LOOP)
    model.hold_next()
    try:
        sent = leave_mid_run(api, path, body, model)  # returns once the server gave up on the run
        started = next(m for m in sent if m["type"] == "http.response.start")
        text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
        if endpoint == "stream":  # the stream just ends: nobody is there to read an error
            assert started["status"] == 200 and "error" not in text and "[DONE]" not in text
        else:
            assert started["status"] == 499 and "cancelled" in text
    finally:
        model.release.set()
    record = wait_for_cancelled(app)
    assert (record["reason"], record["error"]) == ("client_gone", "cancelled")
    assert model.purposes == ["agent_step"] and audit(app, "tool_call") == []
    with TestClient(api) as client:
        assert_budget_whole_again(app, client, model)


# -- approvals ---------------------------------------------------------------------------------------


def pause_delete(client: TestClient, workspace: Path) -> str:
    (workspace / "notes.txt").write_text("my notes")
    r = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace", "user": "ann"})
    assert r.status_code == 202, r.text
    return r.json()["approval"]["id"]  # type: ignore[no-any-return]


def test_a_paused_run_still_resumes_after_a_timeout_elsewhere(workspace: Path) -> None:
    model = HeldModel()
    app = held_app(model)
    with TestClient(create_app(app, workers=False)) as client:
        approval_id = pause_delete(client, workspace)
        model.hold_next()
        try:
            assert post(client, "ask", LOOP, user="bob").status_code == 504
        finally:
            model.release.set()
        assert wait_for_cancelled(app)["reason"] == "timeout"
        done = client.post(f"/v1/approvals/{approval_id}/approve")
    assert (done.status_code, done.json()["status"]) == (200, "answered"), done.text
    assert not (workspace / "notes.txt").exists()
    assert app.approvals("used")[0].id == approval_id


def test_an_approval_whose_resume_times_out_is_carried_out_and_its_run_stops(workspace: Path) -> None:
    model = HeldModel()
    app = held_app(model)
    with TestClient(create_app(app, workers=False)) as client:
        approval_id = pause_delete(client, workspace)
        model.hold_next()  # the model call after the approved delete
        try:
            assert client.post(f"/v1/approvals/{approval_id}/approve").status_code == 504
        finally:
            model.release.set()
        assert wait_for_cancelled(app)["reason"] == "timeout"
        again = client.post(f"/v1/approvals/{approval_id}/approve")
    assert not (workspace / "notes.txt").exists() and app.approvals("used")[0].id == approval_id
    assert model.purposes == ["agent_step"]  # the final step in flight; quality and respond never ran
    assert (again.status_code, again.json()["error"]) == (422, "approval_invalid")  # decided once, used once
