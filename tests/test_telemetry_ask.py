"""One `ask` through the real graph: its trace, costs, budget and audit records, end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keel.app import App
from keel.cli import app as cli
from keel.knowledge.types import SearchHit
from keel.models import FakeProvider

SOURCE = "Python is a programming language created by Guido van Rossum."
REPLY = "Python is a programming language created by Guido van Rossum [1]."


class _App(App):
    """An App whose knowledge base is one fixed passage (the graph finds it through App.search)."""

    def search(self, query, *, kb=None, k=5, where=None, mode="hybrid"):  # type: ignore[no-untyped-def,override]
        return [SearchHit(id="py#0", doc_id="py", title="Python", uri="file:///py.md", text=SOURCE, score=0.8, page=1)]


def _app(**settings) -> _App:
    return _App(
        models={"m": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}},
        roles={"chat": ["m"], "fast": ["m"]},
        providers={"m": FakeProvider([REPLY], repeat_last=True, name="fake:scripted")},
        **settings,
    )


def _walk(nodes):  # type: ignore[no-untyped-def]
    for node in nodes:
        yield node
        yield from _walk(node.children)


def test_the_trace_of_one_ask_carries_both_vocabularies_on_the_right_spans():
    app = _app()
    answer = app.ask("What is Python?", session="s1", user="u1")
    app.telemetry.flush()
    assert answer.status == "answered"

    spans = list(_walk(app.telemetry.traces.tree(answer.trace_id)))
    root = spans[0]
    assert (root.name, root.kind, root.attributes["session.id"], root.attributes["user.id"]) == (
        "keel.ask",
        "CHAIN",
        "s1",
        "u1",
    )
    kinds = {s.kind for s in spans}
    assert {"CHAIN", "GUARDRAIL", "RETRIEVER", "LLM"} <= kinds
    [retrieval] = [s for s in spans if s.kind == "RETRIEVER"]
    docs = {k: v for k, v in retrieval.attributes.items() if k.startswith("retrieval.documents.")}
    assert docs["retrieval.documents.0.document.id"] == "py#0"
    assert docs["retrieval.documents.0.document.score"] == 0.8
    assert docs["retrieval.documents.0.document.content"] == SOURCE
    assert json.loads(docs["retrieval.documents.0.document.metadata"])["uri"] == "file:///py.md"
    [model_call] = [s for s in spans if s.name == "chat m"]
    a = model_call.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "scripted"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        answer.usage["input_tokens"],
        answer.usage["output_tokens"],
    )
    assert a["llm.token_count.total"] == answer.usage["input_tokens"] + answer.usage["output_tokens"]
    assert a["llm.cost.total"] == pytest.approx(answer.usage["cost_usd"])
    assert (a["session.id"], a["user.id"]) == ("s1", "u1")
    assert a["llm.prompt_template.version"]  # which prompt version produced the answer

    assert app.telemetry.costs.summary("user") == [
        {
            "key": "u1",
            "calls": 1,
            "errors": 0,
            "cache_hits": 0,
            "input_tokens": answer.usage["input_tokens"],
            "output_tokens": answer.usage["output_tokens"],
            "cost_usd": pytest.approx(answer.usage["cost_usd"]),
        }
    ]
    events = [r.event for r in app.telemetry.audit.records()]
    assert events[0] == "input_guard" and events[-1] == "answer" and "route" in events
    assert app.telemetry.audit.verify().ok

    metrics = app.telemetry.metrics.render().decode()
    assert 'keel_requests_total{route="fast",status="answered"} 1.0' in metrics
    assert 'keel_routes_total{route="fast"} 1.0' in metrics
    assert 'keel_guardrail_verdicts_total{verdict="pass"} 1.0' in metrics
    assert 'keel_request_latency_seconds_count{route="fast"} 1.0' in metrics

    shown = CliRunner().invoke(cli, ["traces", "show", answer.trace_id, "--json"])
    assert json.loads(shown.stdout)["spans"][0]["name"] == "keel.ask"


def test_a_user_budget_stops_ask_with_a_typed_reason():
    app = _app(budgets={"limits": [{"scope": "user", "usd": 1e-6, "per": "day"}]})
    answer = app.ask("What is Python?", user="u1")
    assert answer.status == "stopped"
    assert answer.error["error"] == "budget_exceeded" and "user:u1 per day" in answer.error["message"]
    assert 'keel_budget_rejections_total{scope="user"} 1.0' in app.telemetry.metrics.render().decode()


def test_a_tenant_is_budgeted_costed_and_audited_apart_from_other_tenants():
    app = _app(budgets={"tenant_usd": 0.005}, gateway={"cache": {"enabled": False}})
    first = app.ask("What is Python?", user="ann", tenant="acme")
    assert first.status == "answered", first.to_dict()
    spent = app.telemetry.costs.total(tenant_id="acme")
    assert spent > 0 and app.telemetry.costs.total(tenant_id="globex") == 0

    # acme keeps asking until its budget refuses; globex is untouched by acme's spend
    answers = [app.ask("What is Python?", user="ann", tenant="acme") for _ in range(int(0.005 / spent) + 2)]
    assert answers[-1].status == "stopped" and "tenant:acme" in answers[-1].error["message"]
    assert app.ask("What is Python?", user="bob", tenant="globex").status == "answered"

    app.telemetry.flush()
    asked = [r.data for r in app.telemetry.audit.records() if r.event == "input_guard"]
    assert {(d["user_id"], d["tenant_id"]) for d in asked} == {("ann", "acme"), ("bob", "globex")}
    by_tenant = {row["key"]: row for row in app.telemetry.costs.summary("tenant")}
    assert set(by_tenant) == {"acme", "globex"}


def _failing_app(*replies) -> _App:  # type: ignore[no-untyped-def]
    """Two models in every chain, each playing ``replies`` (the last repeated), no retries, no cache."""
    return _App(
        models={"m": {"provider": "fake"}, "n": {"provider": "fake"}},
        roles={"chat": ["m", "n"], "fast": ["m", "n"]},
        providers={name: FakeProvider(list(replies), repeat_last=True, name=f"fake:{name}") for name in ("m", "n")},
        gateway={"max_retries": 0, "cache": {"enabled": False}},
    )


def _requests_total(app: App) -> dict[tuple[str, str], float]:
    return {
        (s.labels["route"], s.labels["status"]): s.value
        for metric in app.telemetry.metrics.requests.collect()
        for s in metric.samples
        if s.name == "keel_requests_total"
    }


def test_a_request_whose_every_model_fails_raises_and_still_closes_in_the_ledger_and_metrics():
    from keel.errors import AllModelsFailed, ModelUnavailable

    app = _failing_app(ModelUnavailable("m is down"))
    with pytest.raises(AllModelsFailed) as raised:
        app.ask("What is Python?", session="s-fail", user="u1")
    app.telemetry.flush()

    records = list(app.telemetry.audit.records())
    assert records[0].event == "input_guard"
    failed = [r for r in records if r.event == "failed"]
    assert [r.seq for r in failed] == [records[-1].seq]  # one, and it is the last
    data = failed[0].data
    assert data["error"] == "all_models_failed" and data["message"] == raised.value.message
    assert data["thread_id"] == "s-fail" and data["request_id"].startswith("req_")
    assert {r.data.get("request_id") for r in records if "request_id" in r.data} == {data["request_id"]}
    assert app.telemetry.audit.verify().ok

    counts = _requests_total(app)
    assert sum(v for (_, status), v in counts.items() if status == "error") == 1.0
    route = data["route"] or "none"
    assert counts[(route, "error")] == 1.0
    metrics = app.telemetry.metrics.render().decode()
    assert f'keel_request_latency_seconds_count{{route="{route}"}} 1.0' in metrics


def test_an_unexpected_provider_exception_is_recorded_and_re_raised_unchanged():
    boom = RuntimeError("socket exploded")
    app = _failing_app(boom)
    with pytest.raises(RuntimeError) as raised:
        app.ask("What is Python?")
    assert raised.value is boom
    app.telemetry.flush()

    records = list(app.telemetry.audit.records())
    assert records[-1].event == "failed"
    assert records[-1].data["error"] == "internal_error"
    assert records[-1].data["message"] == "RuntimeError: socket exploded"
    assert [r.event for r in records].count("failed") == 1
    assert app.telemetry.audit.verify().ok
    assert sum(v for (_, status), v in _requests_total(app).items() if status == "error") == 1.0


def test_a_successful_request_writes_no_failed_record_and_no_error_count():
    app = _app()
    assert app.ask("What is Python?").status == "answered"
    app.telemetry.flush()
    assert "failed" not in [r.event for r in app.telemetry.audit.records()]
    assert _requests_total(app) == {("fast", "answered"): 1.0}
