"""Costs by call, request, session, user, tenant, model, day; the CLI; the metrics registry."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from keel.app import App
from keel.cli import app as cli
from keel.errors import InputError
from keel.models import ChatRequest, FakeProvider, Message
from keel.telemetry.costs import parse_since

TRAFFIC = [  # (model, user, session, tenant, request)
    ("cheap", "ann", "s1", "acme", "r1"),
    ("cheap", "ann", "s1", "acme", "r1"),
    ("big", "ann", "s1", "acme", "r2"),
    ("cheap", "bob", "s2", "acme", "r3"),
    ("big", "bob", "s3", "zeta", "r4"),
]


def _app(**settings) -> App:
    models = {
        "cheap": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0},
        "big": {"provider": "fake", "input_price_per_mtok": 10.0, "output_price_per_mtok": 30.0},
    }
    providers = {name: FakeProvider(["an answer"], repeat_last=True, name=f"fake:{name}") for name in models}
    return App(
        models=models,
        roles={"chat": ["cheap"], "big": ["big"]},
        providers=providers,
        gateway={"cache": {"enabled": True}},
        **settings,
    )


def _run(app: App) -> list[float]:
    costs = []
    for model, user, session, tenant, request_id in TRAFFIC:
        request = ChatRequest(
            messages=[Message(role="user", content=f"question from {user}")],
            metadata={"user_id": user, "session_id": session, "tenant_id": tenant, "request_id": request_id},
        )
        costs.append(app.gateway.chat(request, role="chat" if model == "cheap" else "big").cost_usd)
    return costs


def test_costs_add_up_along_every_dimension():
    app = _app()
    costs = _run(app)
    assert costs[1] == 0.0  # the second identical cheap call was a cache hit: charged nothing
    c = app.telemetry.costs
    total = sum(costs)
    for by in ("model", "user", "session", "tenant", "request", "day", "call"):
        rows = c.summary(by)
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(total), by
    by_user = {r["key"]: (r["calls"], r["cache_hits"], r["cost_usd"]) for r in c.summary("user")}
    assert by_user == {
        "ann": (3, 1, pytest.approx(costs[0] + costs[2])),
        "bob": (2, 0, pytest.approx(costs[3] + costs[4])),
    }
    by_model = {r["key"]: r["cost_usd"] for r in c.summary("model")}
    assert by_model == {
        "cheap": pytest.approx(costs[0] + costs[3]),
        "big": pytest.approx(costs[2] + costs[4]),
    }
    assert [r["key"] for r in c.summary("model")] == ["big", "cheap"]  # biggest spend first
    assert c.total(tenant_id="zeta") == pytest.approx(costs[4])
    assert [r["key"] for r in c.summary("day")] == [time.strftime("%Y-%m-%d", time.gmtime())]
    assert c.summary("model", since=time.time() + 60) == []
    hits = [t for t in app.telemetry.traces.list(limit=10) if t.spans == 1]
    cached = [app.telemetry.traces.tree(t.trace_id)[0] for t in hits]
    assert [n.attributes["keel.cached"] for n in cached].count(True) == 1  # the cache hit has its own span


def test_parse_since():
    now = 1_800_000_000.0
    assert parse_since("24h", now) == now - 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2026-11-01", now) == 1793491200.0
    assert parse_since(None) is None
    with pytest.raises(InputError, match="24h, 7d"):
        parse_since("yesterday")


def test_cli_costs_by_user_and_a_bad_grouping():
    app = _app()
    costs = _run(app)
    app.telemetry.flush()
    runner = CliRunner()
    result = runner.invoke(cli, ["costs", "--by", "user", "--since", "1h", "--json"])
    data = json.loads(result.stdout)
    assert (data["by"], sorted(r["key"] for r in data["rows"])) == ("user", ["ann", "bob"])
    assert data["total_usd"] == pytest.approx(sum(costs))
    table = runner.invoke(cli, ["costs", "--by", "day"])
    assert table.exit_code == 0 and "total $" in table.stdout
    bad = runner.invoke(cli, ["costs", "--by", "planet"])
    assert bad.exit_code != 0


def test_metrics_registry_has_keels_series_only():
    app = _app()
    _run(app)
    m = app.telemetry.metrics
    m.observe_request("fast", "answered", 0.2)
    m.observe_route("fast")
    m.observe_guardrail("pass")
    text = m.render().decode()
    for line in (
        'keel_model_calls_total{model="cheap",outcome="ok"} 2.0',
        'keel_model_calls_total{model="cheap",outcome="cached"} 1.0',
        'keel_cache_hits_total{model="cheap"} 1.0',
        'keel_requests_total{route="fast",status="answered"} 1.0',
        'keel_request_latency_seconds_bucket{le="0.25",route="fast"} 1.0',
        'keel_routes_total{route="fast"} 1.0',
        'keel_guardrail_verdicts_total{verdict="pass"} 1.0',
    ):
        assert line in text, line
    assert 'keel_tokens_total{kind="input",model="big"}' in text and "keel_cost_usd_total" in text
    assert "python_gc" not in text and "process_" not in text  # not the global registry
    assert _app().telemetry.metrics.registry is not m.registry


@pytest.mark.scale
def test_trace_store_and_costs_on_postgresql(pg_url):
    app = _app(telemetry={"database_url": pg_url})
    costs = _run(app)
    c = app.telemetry.costs
    assert {r["key"]: r["calls"] for r in c.summary("user")} == {"ann": 3, "bob": 2}
    assert sum(r["cost_usd"] for r in c.summary("day")) == pytest.approx(sum(costs))
    traces = app.telemetry.traces.list()
    assert len(traces) == 5 and {t.name for t in traces} == {"chat cheap", "chat big"}  # one is a cache hit
    trace_id = traces[0].trace_id
    vote = app.telemetry.feedback.record(trace_id, "up", question="q", answer="a")
    assert vote.curation_id is not None
    app.telemetry.engine.dispose()


def test_costs_group_by_the_prompt_version_each_call_used(keel_home):
    """Which version of a prompt costs what: each graph call's cost row names its template and version."""
    from keel.graph import by_purpose
    from keel.models.fake import FunctionProvider
    from keel.prompts import PromptLibrary

    provider = FunctionProvider(by_purpose({"answer": ["Hello!"], "route_judge": ['{"label": "chat", "why": "hi"}']}),
                                name="scripted")
    app = App(providers={"scripted": provider},
              models={"scripted": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}},
              roles={"chat": ["scripted"], "fast": ["scripted"]}, gateway={"cache": {"enabled": False}})
    for _ in range(2):
        assert app.ask("hello there, how are you?").answer == "Hello!"
    rows = app.telemetry.costs.summary("prompt")
    answer_prompt = f"answer_chat@{PromptLibrary().get('answer_chat').version}"
    assert answer_prompt in {r["key"] for r in rows}
    assert next(r for r in rows if r["key"] == answer_prompt)["calls"] == 2
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(app.telemetry.costs.total())
    listed = json.loads(CliRunner().invoke(cli, ["costs", "--by", "prompt", "--json"]).stdout)
    assert listed["by"] == "prompt" and answer_prompt in {r["key"] for r in listed["rows"]}
    narrow = CliRunner().invoke(cli, ["costs", "--by", "prompt"], env={"COLUMNS": "80"}).stdout
    cells = "".join(line.split("│")[1].strip() for line in narrow.splitlines() if line.startswith("│"))
    assert answer_prompt in cells  # folded over lines on a narrow terminal, never cut short
