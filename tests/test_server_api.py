"""The HTTP API over a scripted graph: answers, approvals, feedback, traces, metrics, probes and limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel import App
from keel.graph import by_purpose
from keel.knowledge.types import SearchHit
from keel.models.fake import FunctionProvider
from keel.server import create_app

SOURCE = "Python is a programming language created by Guido van Rossum."
REPLY = "Python is a programming language created by Guido van Rossum [1]."

ANSWER_KEYS = {"status", "answer", "route", "route_reason", "sources", "guardrail", "usage", "models", "trace_id",
               "latency_ms"}


class ScriptedApp(App):
    """An App whose knowledge base is one passage about Python (found through App.search, as in production)."""

    def search(self, query, *, kb=None, k=5, where=None, mode="hybrid"):  # type: ignore[no-untyped-def,override]
        if "python" not in query.lower():
            return []
        return [SearchHit(id="py#0", doc_id="py", title="Python", uri="file:///py.md", text=SOURCE, score=0.8, page=1)]


def scripted_app(**settings: Any) -> ScriptedApp:
    """Answers questions about Python from the passage; deletes workspace files only after approval."""
    provider = FunctionProvider(
        by_purpose(
            {
                "answer": [REPLY],
                "agent_step": ["Done: deleted notes.txt."],
                "route_judge": ['{"label": "chat", "why": "small talk"}'],
            }
        ),
        name="scripted",
    )
    settings.setdefault("gateway", {"cache": {"enabled": False}})
    return ScriptedApp(
        providers={"scripted": provider},
        models={"scripted": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}},
        roles={"chat": ["scripted"], "fast": ["scripted"]},
        **settings,
    )


def make_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built-in file tools' folder (KEEL_WORKSPACE), empty."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("KEEL_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def keel_app(workspace: Path) -> ScriptedApp:
    return scripted_app()


@pytest.fixture
def client(keel_app: ScriptedApp) -> TestClient:
    with TestClient(create_app(keel_app)) as c:
        yield c  # type: ignore[misc]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message", "hint"} and body["error"] == code, body
    assert body["message"]
    return body  # type: ignore[no-any-return]


# -- /v1/ask -------------------------------------------------------------------------------------


def test_ask_returns_the_answer_json_with_sources_route_cost_and_trace(client: TestClient) -> None:
    r = client.post("/v1/ask", json={"question": "What is Python?", "session": "s1", "user": "ann"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == ANSWER_KEYS
    assert (body["status"], body["answer"], body["models"]) == ("answered", REPLY, ["scripted"])
    assert body["route"] in ("fast", "agent") and body["route_reason"]
    assert [(s["id"], s["title"], s["uri"], s["page"], s["score"]) for s in body["sources"]] == [
        ("py#0", "Python", "file:///py.md", 1, 0.8)]
    assert body["guardrail"]["verdict"] == "pass"
    assert body["usage"]["cost_usd"] > 0 and body["usage"]["model_calls"] >= 1
    assert len(body["trace_id"]) == 32 and r.headers["x-request-id"].startswith("req_")


def test_ask_runs_as_the_body_user_and_records_it_on_the_trace(client: TestClient, keel_app: App) -> None:
    trace_id = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"}).json()["trace_id"]
    [root] = client.get(f"/v1/traces/{trace_id}").json()["spans"]  # keel.ask is the root, not an HTTP span
    assert (root["name"], root["attributes"]["user.id"]) == ("keel.ask", "ann")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "hi", "colour": "blue"}, "colour"),
        ({"question": 42}, "question"),
        ({"question": "hi", "kb": ""}, "kb"),
    ],
)
def test_a_bad_ask_body_is_422_with_the_field_named(client: TestClient, body: dict[str, Any], where: str) -> None:
    err = assert_error(client.post("/v1/ask", json=body), 422, "input_error")
    assert where in err["message"]


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/ask", content=b"question=hi", headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(r, 422, "input_error")


def test_a_question_the_input_guard_refuses_maps_through_its_error(workspace: Path) -> None:
    app = scripted_app(guardrails={"max_input_chars": 20})
    with TestClient(create_app(app)) as client:
        err = assert_error(client.post("/v1/ask", json={"question": "x " * 50}), 422, "input_error")
    assert err["hint"]


def test_over_budget_is_429_with_retry_after_until_the_window_resets(workspace: Path) -> None:
    app = scripted_app(budgets={"limits": [{"scope": "user", "usd": 0.000001, "per": "day"}]})
    with TestClient(create_app(app)) as client:
        r = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"})
        err = assert_error(r, 429, "budget_exceeded")
        assert "user" in err["message"] and err["hint"]
    assert 0 < int(r.headers["retry-after"]) <= 86_400  # a daily window resets by the next UTC midnight


def test_an_all_time_budget_has_no_retry_after(workspace: Path) -> None:
    app = scripted_app(budgets={"user_usd": 0.000001})
    with TestClient(create_app(app)) as client:
        r = client.post("/v1/ask", json={"question": "What is Python?", "user": "ann"})
    assert_error(r, 429, "budget_exceeded")
    assert "retry-after" not in r.headers


# -- approvals -------------------------------------------------------------------------------------


def _pause(client: TestClient, workspace: Path) -> dict[str, Any]:
    (workspace / "notes.txt").write_text("x")
    r = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace", "user": "ann"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending_approval" and body["answer"].startswith("Waiting for a person")
    assert set(body["approval"]) == {"id", "tool", "args", "expires_at"} and body["approval"]["tool"] == "delete_file"
    return body["approval"]  # type: ignore[no-any-return]


def test_a_paused_run_is_202_then_listed_then_approved_and_finished(client: TestClient, workspace: Path) -> None:
    approval = _pause(client, workspace)
    pending = client.get("/v1/approvals", params={"status": "pending"}).json()
    assert [(a["id"], a["status"], a["requester"]) for a in pending] == [(approval["id"], "pending", "ann")]
    one = client.get(f"/v1/approvals/{approval['id']}").json()
    assert (one["tool"], one["args"]) == ("delete_file", approval["args"])

    r = client.post(f"/v1/approvals/{approval['id']}/approve")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["answer"]) == ("answered", "Done: deleted notes.txt.")
    assert not (workspace / "notes.txt").exists()
    decided = client.get(f"/v1/approvals/{approval['id']}").json()
    assert (decided["status"], decided["decided_by"]) == ("used", "anonymous")
    assert client.get("/v1/approvals", params={"status": "pending"}).json() == []
    again = assert_error(client.post(f"/v1/approvals/{approval['id']}/approve"), 422, "approval_invalid")
    assert "already" in again["message"]


def test_reject_takes_a_reason_and_the_file_stays(client: TestClient, workspace: Path) -> None:
    approval = _pause(client, workspace)
    r = client.post(f"/v1/approvals/{approval['id']}/reject", json={"reason": "keep my notes"})
    assert r.status_code == 200 and r.json()["status"] == "answered"
    assert (workspace / "notes.txt").exists()
    record = client.get(f"/v1/approvals/{approval['id']}").json()
    assert (record["status"], record["reason"]) == ("rejected", "keep my notes")


def test_unknown_approvals_are_404(client: TestClient) -> None:
    for r in (
        client.get("/v1/approvals/apr_nope"),
        client.post("/v1/approvals/apr_nope/approve"),
        client.post("/v1/approvals/apr_nope/reject", json={"reason": "x"}),
    ):
        assert_error(r, 404, "not_found")
    assert_error(client.get("/v1/approvals", params={"status": "maybe"}), 422, "input_error")


# -- feedback and traces ----------------------------------------------------------------------------


def test_feedback_on_an_answer_is_recorded_with_its_question(client: TestClient, keel_app: App) -> None:
    trace_id = client.post("/v1/ask", json={"question": "What is Python?"}).json()["trace_id"]
    r = client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up", "comment": "good"})
    assert r.status_code == 201, r.text
    vote = r.json()
    assert (vote["trace_id"], vote["rating"], vote["comment"], vote["question"]) == (
        trace_id, "up", "good", "What is Python?")
    assert vote["curation_id"] is not None  # an up-vote becomes a few-shot candidate
    assert [v.trace_id for v in keel_app.telemetry.feedback.votes()] == [trace_id]


def test_feedback_unhappy_paths(client: TestClient) -> None:
    assert_error(client.post("/v1/feedback", json={"trace_id": "0" * 32, "rating": "up"}), 404, "not_found")
    err = assert_error(client.post("/v1/feedback", json={"trace_id": "abc", "rating": "meh"}), 422, "input_error")
    assert "rating" in err["message"]


def test_traces_list_newest_first_and_show_as_a_span_tree(client: TestClient) -> None:
    first = client.post("/v1/ask", json={"question": "What is Python?"}).json()["trace_id"]
    second = client.post("/v1/ask", json={"question": "Who created Python?"}).json()["trace_id"]
    rows = client.get("/v1/traces", params={"limit": 10}).json()
    assert [r["trace_id"] for r in rows] == [second, first]
    assert rows[0]["name"] == "keel.ask" and rows[0]["spans"] > 3 and rows[0]["cost_usd"] > 0
    assert [r["trace_id"] for r in client.get("/v1/traces", params={"limit": 1}).json()] == [second]
    assert client.get("/v1/traces", params={"since": "1h"}).status_code == 200

    tree = client.get(f"/v1/traces/{first}").json()
    assert tree["trace_id"] == first
    [root] = tree["spans"]
    assert root["name"] == "keel.ask" and root["parent_id"] is None
    names = set()
    stack = [root]
    while stack:
        node = stack.pop()
        names.add(node["name"])
        stack.extend(node["children"])
    assert "chat scripted" in names or any(n.startswith("chat ") for n in names)


def test_traces_unhappy_paths(client: TestClient) -> None:
    assert_error(client.get("/v1/traces/" + "f" * 32), 404, "not_found")
    assert_error(client.get("/v1/traces", params={"limit": 0}), 422, "input_error")
    assert_error(client.get("/v1/traces", params={"since": "yesterday-ish"}), 422, "input_error")


# -- operations -------------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_that_counts_requests(client: TestClient) -> None:
    client.post("/v1/ask", json={"question": "What is Python?"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert any(line.startswith('keel_requests_total{route="') and 'status="answered"' in line for line in lines)
    assert any(line.startswith('keel_model_calls_total{model="scripted"') for line in lines)


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert {name: c["ok"] for name, c in body["checks"].items()} == {
        "telemetry": True, "keys": True, "knowledge": True, "model": True}


def test_readyz_is_503_with_the_reason_when_the_model_is_unavailable(workspace: Path) -> None:
    app = scripted_app()
    provider = app.providers["scripted"]
    provider.available = lambda: (False, "the endpoint refused the connection")  # type: ignore[method-assign]
    with TestClient(create_app(app)) as client:
        r = client.get("/readyz")
    err = assert_error(r, 503, "not_ready")
    assert err["message"] == "model: model 'scripted' is not available: the endpoint refused the connection"
    assert err["checks"]["telemetry"]["ok"] and not err["checks"]["model"]["ok"]


# -- limits, ids, CORS, UI -----------------------------------------------------------------------------


def test_an_oversized_body_is_413_by_length_or_while_streaming(workspace: Path) -> None:
    app = scripted_app(server={"max_body_kb": 1})
    big = {"question": "x" * 2000}
    with TestClient(create_app(app)) as client:
        err = assert_error(client.post("/v1/ask", json=big), 413, "payload_too_large")
        assert "1 KB" in err["message"] and "max_body_kb" in err["hint"]

        def chunks():  # no Content-Length: the limit applies while the body is read
            yield b'{"question": "'
            for _ in range(10):
                yield b"x" * 200
            yield b'"}'

        r = client.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        assert client.post("/v1/ask", json={"question": "What is Python?"}).status_code == 200


def test_the_request_id_is_echoed_when_given_and_made_otherwise(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert made.startswith("req_") and made != client.get("/healthz").headers["x-request-id"]


def test_cors_only_when_configured(workspace: Path) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(scripted_app())) as client:
        assert "access-control-allow-origin" not in client.get("/healthz", headers=preflight).headers
    app = scripted_app(server={"cors_origins": ["https://app.example"]})
    with TestClient(create_app(app)) as client:
        r = client.options("/v1/ask", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_unknown_routes_and_methods_answer_in_the_error_shape(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(server={"ui": False}))) as client:  # the UI's mount answers GET /...
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")
        assert_error(client.get("/v1/ask"), 405, "method_not_allowed")


def test_the_ui_is_served_at_the_root_when_enabled(workspace: Path) -> None:
    from keel.server._app import UI_DIR

    if not (UI_DIR / "index.html").is_file():
        pytest.skip("the web UI files are not in this checkout")
    with TestClient(create_app(scripted_app())) as client:
        r = client.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    with TestClient(create_app(scripted_app(server={"ui": False}))) as client:
        assert_error(client.get("/"), 404, "not_found")
        assert client.get("/healthz").status_code == 200


def test_the_openapi_document_describes_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/ask", "/v1/chat/completions", "/v1/approvals", "/v1/approvals/{approval_id}",
            "/v1/approvals/{approval_id}/approve", "/v1/approvals/{approval_id}/reject", "/v1/feedback",
            "/v1/curation", "/v1/curation/{curation_id}/{decision}",
            "/v1/traces", "/v1/traces/{trace_id}", "/v1/jobs", "/v1/jobs/{job_id}", "/metrics", "/healthz",
            "/readyz"} <= set(paths)
