"""Tracing: spans from the gateway and from plain OpenTelemetry code, in the store and over OTLP/HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry import trace
from typer.testing import CliRunner

from keel.app import App
from keel.cli import app as cli
from keel.errors import InputError, ModelUnavailable
from keel.knowledge.types import SearchHit
from keel.models import ChatRequest, FakeProvider, Message
from keel.telemetry.spans import (
    set_guardrail,
    set_kind,
    set_request_context,
    set_retrieval_documents,
    set_tool_call,
)

CONTEXT = {
    "request_id": "req-1",
    "session_id": "sess-1",
    "user_id": "alice",
    "tenant_id": "acme",
    "route": "agent",
    "prompt_version": "ask@3",
}
HITS = [
    SearchHit(
        id="doc1#0",
        doc_id="doc1",
        title="Guide",
        uri="file:///guide.md",
        text="The answer is 42.",
        score=0.71,
        page=3,
    ),
    SearchHit(id="doc2#1", doc_id="doc2", title="FAQ", uri="file:///faq.md", text="Ask twice.", score=0.4),
]


def _app(replies=("It is 42.",), **settings) -> App:
    provider = FakeProvider(list(replies), name="fake:scripted")
    settings.setdefault("gateway", {"cache": {"enabled": False}})
    return App(
        models={"m": {"provider": "fake", "input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}},
        roles={"chat": ["m"]},
        providers={"m": provider},
        **settings,
    )


def _ask(app: App, question: str = "What is the answer?") -> str:
    """What the graph does per question: node spans via the plain OTel API, model calls via the gateway."""
    _ = app.gateway  # the graph is built (and tracing routed) before the first question
    tracer = trace.get_tracer("keel")
    with tracer.start_as_current_span("keel.ask") as root:
        set_kind(root, "chain")
        set_request_context(root, CONTEXT)
        root.set_attribute("input.value", question)
        with tracer.start_as_current_span("retrieve") as span:
            set_retrieval_documents(span, HITS, query=question)
        with tracer.start_as_current_span("tool calculator") as span:
            set_tool_call(span, "calculator", {"expression": "6*7"}, "42")
        request = ChatRequest(
            messages=[
                Message(role="system", content="Answer from the sources."),
                Message(role="user", content=question),
            ],
            metadata=CONTEXT,
        )
        answer = app.gateway.chat(request).text
        with tracer.start_as_current_span("guardrail") as span:
            set_guardrail(span, "pass", [{"name": "groundedness", "score": 0.93}])
        root.set_attribute("output.value", answer)
        trace_id = format(root.get_span_context().trace_id, "032x")
    app.telemetry.flush()
    return trace_id


def _spans(app: App, trace_id: str) -> dict[str, dict]:
    roots = app.telemetry.traces.tree(trace_id)
    found: dict[str, dict] = {}
    stack = [(r, None) for r in roots]
    while stack:
        node, parent = stack.pop()
        found[node.name] = {
            "parent": parent,
            "kind": node.kind,
            "status": node.status,
            "attrs": node.attributes,
        }
        stack.extend((c, node.name) for c in node.children)
    return found


def test_one_ask_has_both_vocabularies_on_the_right_spans():
    app = _app()
    spans = _spans(app, _ask(app))

    assert set(spans) == {"keel.ask", "retrieve", "tool calculator", "chat m", "guardrail"}
    assert {name: (s["parent"], s["kind"]) for name, s in spans.items()} == {
        "keel.ask": (None, "CHAIN"),
        "retrieve": ("keel.ask", "RETRIEVER"),
        "tool calculator": ("keel.ask", "TOOL"),
        "chat m": ("keel.ask", "LLM"),
        "guardrail": ("keel.ask", "GUARDRAIL"),
    }
    llm = spans["chat m"]["attrs"]
    i, o = llm["gen_ai.usage.input_tokens"], llm["gen_ai.usage.output_tokens"]
    assert i > 0 and o > 0
    assert {
        k: llm[k]
        for k in llm
        if not k.startswith(("llm.input_messages", "llm.output_messages", "gen_ai.input", "gen_ai.output"))
    } == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "fake",
        "gen_ai.request.model": "scripted",
        "gen_ai.request.temperature": 0.0,
        "gen_ai.response.model": "m",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": i,
        "gen_ai.usage.output_tokens": o,
        "openinference.span.kind": "LLM",
        "llm.model_name": "scripted",
        "llm.provider": "fake",
        "llm.invocation_parameters": '{"temperature":0.0}',
        "llm.token_count.prompt": i,
        "llm.token_count.completion": o,
        "llm.token_count.total": i + o,
        "llm.token_count.prompt_details.cache_read": 0,
        "llm.cost.prompt": pytest.approx(i * 2e-6),
        "llm.cost.completion": pytest.approx(o * 8e-6),
        "llm.cost.total": pytest.approx(i * 2e-6 + o * 8e-6),
        "llm.finish_reason": "stop",
        "session.id": "sess-1",
        "user.id": "alice",
        "keel.request_id": "req-1",
        "keel.tenant_id": "acme",
        "keel.route": "agent",
        "llm.prompt_template.version": "ask@3",
        "keel.model": "m",
        "keel.attempt": 1,
        "keel.cached": False,
    }
    assert (llm["llm.input_messages.1.message.role"], llm["llm.input_messages.1.message.content"]) == (
        "user",
        "What is the answer?",
    )
    assert llm["llm.output_messages.0.message.content"] == "It is 42."
    assert json.loads(llm["gen_ai.input.messages"])[0]["role"] == "system"
    docs = {k: v for k, v in spans["retrieve"]["attrs"].items() if k.startswith("retrieval.")}
    assert docs == {
        "retrieval.documents.0.document.id": "doc1#0",
        "retrieval.documents.0.document.score": 0.71,
        "retrieval.documents.0.document.content": "The answer is 42.",
        "retrieval.documents.0.document.metadata": '{"title":"Guide","uri":"file:///guide.md","page":3}',
        "retrieval.documents.1.document.id": "doc2#1",
        "retrieval.documents.1.document.score": 0.4,
        "retrieval.documents.1.document.content": "Ask twice.",
        "retrieval.documents.1.document.metadata": '{"title":"FAQ","uri":"file:///faq.md"}',
    }
    assert spans["keel.ask"]["attrs"]["session.id"] == "sess-1"
    assert spans["tool calculator"]["attrs"]["tool.name"] == "calculator"
    assert spans["guardrail"]["attrs"]["keel.guardrail.verdict"] == "pass"


def test_content_capture_off_keeps_numbers_and_drops_text():
    app = _app(telemetry={"capture_content": False})
    spans = _spans(app, _ask(app))
    # even the text the "graph" put on its own root span (input.value, output.value) is dropped
    everything = json.dumps({name: s["attrs"] for name, s in spans.items()})
    assert "What is the answer?" not in everything and "It is 42." not in everything
    assert "The answer is 42." not in everything
    llm = spans["chat m"]["attrs"]
    assert llm["llm.token_count.total"] > 0 and llm["llm.cost.total"] > 0
    assert spans["retrieve"]["attrs"]["retrieval.documents.0.document.id"] == "doc1#0"


def test_a_retried_attempt_is_its_own_error_span_and_cost_rows_link_to_spans():
    app = _app(
        replies=(ModelUnavailable("503 from upstream"), "ok now"),
        gateway={"cache": {"enabled": False}, "backoff_base_s": 0},
    )
    trace_id = _ask(app)
    roots = app.telemetry.traces.tree(trace_id)
    attempts = [c for c in roots[0].children if c.name == "chat m"]
    assert [(a.attributes["keel.attempt"], a.status) for a in attempts] == [(1, "error"), (2, "ok")]
    assert attempts[0].attributes["error.type"] == "model_unavailable"
    assert attempts[0].events[0]["name"] == "exception"
    calls = app.telemetry.costs.summary("call")
    assert sorted((c["errors"], c["calls"]) for c in calls) == [(0, 1), (1, 1)]
    with app.telemetry.engine.connect() as conn:
        tagged = conn.exec_driver_sql("SELECT trace_id, span_id FROM keel_model_calls").all()
    assert sorted(tagged) == sorted((trace_id, a.span_id) for a in attempts)  # each cost row names its span


def test_streams_get_a_model_span_too():
    app = _app(replies=("one two three",))
    request = ChatRequest(messages=[Message(role="user", content="count")], metadata=CONTEXT)
    text = "".join(c.text for c in app.gateway.stream(request))
    app.telemetry.flush()
    [summary] = app.telemetry.traces.list()
    llm = app.telemetry.traces.tree(summary.trace_id)[0]
    assert text == "one two three" and llm.name == "chat m"
    assert llm.attributes["llm.output_messages.0.message.content"] == "one two three"
    assert llm.attributes["gen_ai.usage.output_tokens"] > 0


def test_setup_is_idempotent_and_telemetry_off_records_nothing():
    app = _app(replies=("a", "b"))
    app.telemetry.setup_tracing()
    app.telemetry.setup_tracing()
    _ask(app)
    assert [t.spans for t in app.telemetry.traces.list()] == [5]  # no span stored twice
    off = _app(telemetry={"enabled": False})
    off.gateway.chat(ChatRequest(messages=[Message(role="user", content="hi")]))
    span = trace.get_tracer("keel").start_span("x")
    assert not span.is_recording()
    span.end()


def test_cli_lists_and_shows_traces():
    app = _app()
    trace_id = _ask(app)
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["traces", "list", "--json"]).stdout)
    assert [(t["trace_id"], t["name"], t["spans"], t["status"]) for t in listed] == [(trace_id, "keel.ask", 5, "ok")]
    assert (
        listed[0]["cost_usd"] == pytest.approx(app.telemetry.costs.total(trace_id=trace_id))
        and listed[0]["cost_usd"] > 0
    )
    for columns, wide in (("80", False), ("150", True)):  # a narrow terminal (or a pipe) and a wide one
        table = runner.invoke(cli, ["traces", "list"], env={"COLUMNS": columns}).stdout
        assert trace_id in table and max(map(len, table.splitlines())) <= int(columns)
        assert ("USD" in table) is wide and "status" in table
    shown = runner.invoke(cli, ["traces", "show", trace_id])
    assert shown.exit_code == 0
    assert "keel.ask" in shown.stdout and "chat m" in shown.stdout and "tok" in shown.stdout
    tree = json.loads(runner.invoke(cli, ["traces", "show", trace_id, "--json"]).stdout)
    assert [c["name"] for c in tree["spans"][0]["children"]] == [
        "retrieve",
        "tool calculator",
        "chat m",
        "guardrail",
    ]
    missing = runner.invoke(cli, ["traces", "show", "nope"])
    assert missing.exit_code != 0
    plain = runner.invoke(cli, ["traces"])  # no subcommand: the list
    assert plain.exit_code == 0 and trace_id in plain.stdout


class _Collector(BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def test_otlp_http_export_reaches_a_collector(monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _Collector.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        app = _app(telemetry={"otlp_endpoint": endpoint, "otlp_headers": {"x-api-key": "k"}})
        trace_id = _ask(app)
        trace.get_tracer_provider().force_flush()
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.bodies and all(p == "/v1/traces" for p, _, _ in _Collector.bodies)
    assert all(ct == "application/x-protobuf" for _, ct, _ in _Collector.bodies)
    spans = {}
    for _, _, body in _Collector.bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans[s.name] = (service, s.trace_id.hex(), {a.key: a.value for a in s.attributes})
    assert set(spans) == {"keel.ask", "retrieve", "tool calculator", "chat m", "guardrail"}
    service, exported_trace, attrs = spans["chat m"]
    assert (service, exported_trace) == ("keel", trace_id)
    assert attrs["gen_ai.request.model"].string_value == "scripted"
    assert attrs["openinference.span.kind"].string_value == "LLM"
    assert attrs["llm.token_count.total"].int_value > 0
    assert len(app.telemetry.traces.tree(trace_id)[0].children) == 4  # the store got them as well


def test_a_keel_command_exports_its_spans_before_it_exits(monkeypatch, tmp_path, keel_home):
    """``keel ask`` ends well inside the OTLP processor's batching delay: the exit hook sends its spans."""
    import subprocess
    import sys

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    _Collector.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "keel.yaml"
    config.write_text(
        "models: {scripted: {provider: fake, replies: ['Hello there.']}}\n"
        "roles: {chat: [scripted], fast: [scripted]}\n"
        f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:{server.server_port}/v1/traces'}}\n"
    )
    try:
        done = subprocess.run([sys.executable, "-m", "keel", "ask", "hello", "--config", str(config), "--json"],
                              capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "NO_PROXY": "127.0.0.1"})
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    trace_id = json.loads(done.stdout)["trace_id"]
    exported = {s.name: s.trace_id.hex() for _, _, body in _Collector.bodies
                for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                for ss in rs.scope_spans for s in ss.spans}
    assert exported.get("keel.ask") == trace_id and "chat scripted" in exported


def test_sampling_keeps_a_share_of_traces_and_every_cost_row():
    app = _app(replies=["x"] * 200, telemetry={"sample_ratio": 0.25})
    _ = app.gateway
    for i in range(200):
        with trace.get_tracer("keel").start_as_current_span("keel.ask"):
            app.gateway.chat(ChatRequest(messages=[Message(role="user", content=f"q{i}")]))
    app.telemetry.flush()
    kept = len(app.telemetry.traces.list(limit=1000))
    assert 20 <= kept <= 80  # about a quarter; trace ids are random
    assert all(t.spans == 2 for t in app.telemetry.traces.list(limit=1000))  # children follow their root
    assert sum(r["calls"] for r in app.telemetry.costs.summary("model")) == 200


def test_otlp_export_without_content(monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _Collector.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        app = _app(telemetry={"otlp_endpoint": endpoint, "capture_content": False})
        _ask(app)
        trace.get_tracer_provider().force_flush()
    finally:
        server.shutdown()
        server.server_close()
    keys = set()
    for _, _, body in _Collector.bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    keys |= {a.key for a in s.attributes}
                    assert b"What is the answer?" not in s.SerializeToString()
    assert "llm.token_count.total" in keys and "retrieval.documents.0.document.id" in keys
    assert not {"input.value", "output.value", "gen_ai.input.messages"} & keys


def _age_trace(app: App, trace_id: str, days: float) -> None:
    """Move a whole trace ``days`` into the past, as if it had been recorded then."""
    import sqlalchemy as sa

    from keel.telemetry import _schema as t

    with app.telemetry.engine.begin() as conn:
        b = t.span_batches
        conn.execute(sa.update(b).where(b.c.trace_id == trace_id)
                     .values(start_time=b.c.start_time - days * 86400, end_time=b.c.end_time - days * 86400))


def test_old_traces_are_pruned_whole_by_command_and_by_retention_setting():
    app = _app(replies=("It is 42.",) * 3)
    old, recent = _ask(app), _ask(app)
    _age_trace(app, old, 40)
    pruned = CliRunner().invoke(cli, ["traces", "prune", "--older-than", "30d", "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout)["deleted_spans"] == 5  # every span of the old trace, none of the new
    assert [s.trace_id for s in app.telemetry.traces.list()] == [recent]
    assert len(_spans(app, recent)) == 5

    older = _ask(app)
    _age_trace(app, older, 10)
    reopened = _app(telemetry={"trace_retention_days": 7})
    assert [s.trace_id for s in reopened.telemetry.traces.list()] == [recent]

    bad = CliRunner().invoke(cli, ["traces", "prune", "--older-than", "soon"])
    assert isinstance(bad.exception, InputError) and "--older-than 'soon' is neither" in str(bad.exception)


def test_a_trace_written_in_two_batches_reads_back_whole():
    """The store writes a trace's spans as each write batch sees them; readers join the batches."""
    app = _app()
    app.telemetry.setup_tracing()
    tracer = trace.get_tracer("keel")
    with tracer.start_as_current_span("keel.ask") as root:
        with tracer.start_as_current_span("keel.router"):
            pass
        app.telemetry.flush()  # the child is written before its parent has ended
        trace_id = format(root.get_span_context().trace_id, "032x")
    app.telemetry.flush()
    with app.telemetry.engine.connect() as conn:
        batches = conn.exec_driver_sql("SELECT span_count FROM keel_span_batches WHERE trace_id = ?",
                                       (trace_id,)).scalars().all()
    assert batches == [1, 1]
    [summary] = app.telemetry.traces.list()
    [tree] = app.telemetry.traces.tree(trace_id)
    assert (summary.spans, summary.name, tree.name, [c.name for c in tree.children]) == (
        2, "keel.ask", "keel.ask", ["keel.router"])
    assert app.telemetry.traces.prune(older_than=summary.start_time + 1) == 2  # both batches go together


def test_without_content_capture_the_guards_findings_are_not_stored_either():
    """The quality guard's problems and check details quote the draft answer: they are message text."""
    app = _app(telemetry={"capture_content": False})
    app.telemetry.setup_tracing()
    with trace.get_tracer("keel").start_as_current_span("keel.guard.quality") as current:
        current.set_attributes({"keel.problems": ["unsupported: 'Paris is in Spain.'"], "keel.verdict": "reask"})
        set_guardrail(current, "reask", [{"name": "repetition", "passed": False, "detail": "Paris is in Spain."}])
        trace_id = format(current.get_span_context().trace_id, "032x")
    app.telemetry.flush()
    [node] = app.telemetry.traces.tree(trace_id)
    assert "Spain" not in json.dumps(node.attributes)
    assert node.attributes["keel.verdict"] == "reask" and node.attributes["keel.guardrail.verdict"] == "reask"


def test_a_long_running_process_applies_trace_retention_without_being_reopened(monkeypatch):
    import time

    from keel.telemetry import _telemetry

    monkeypatch.setattr(_telemetry, "RETENTION_EVERY_S", 0.1)
    app = _app(replies=("It is 42.",) * 2, telemetry={"trace_retention_days": 7})
    old, recent = _ask(app), _ask(app)
    assert {s.trace_id for s in app.telemetry.traces.list()} == {old, recent}  # the store is open
    _age_trace(app, old, 10)
    deadline = time.monotonic() + 10
    while old in {s.trace_id for s in app.telemetry.traces.list()} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [s.trace_id for s in app.telemetry.traces.list()] == [recent]  # pruned by the writer's hourly chore
