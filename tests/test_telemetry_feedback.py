"""Feedback: votes tied to trace, prompt version and route; curation queue; eval cases as JSONL."""

from __future__ import annotations

import io
import json
import time

import pytest
from opentelemetry import trace
from typer.testing import CliRunner

from keel.app import App
from keel.cli import app as cli
from keel.errors import InputError, NotFound
from keel.models import ChatRequest, FakeProvider, Message
from keel.telemetry.spans import set_request_context


def _answered(app: App, question: str, answer: str) -> str:
    """A traced answer as the graph records it: question and answer on the root, prompt and route below."""
    _ = app.gateway
    with trace.get_tracer("keel").start_as_current_span("keel.ask") as root:
        root.set_attribute("input.value", question)
        request = ChatRequest(
            messages=[Message(role="user", content=question)],
            metadata={"prompt_version": "ask@7", "route": "fast"},
        )
        app.providers["m"].queue(answer)  # type: ignore[attr-defined]
        root.set_attribute("output.value", app.gateway.chat(request).text)
        set_request_context(root, {"user_id": "u1"})
        return format(root.get_span_context().trace_id, "032x")


@pytest.fixture
def app() -> App:
    return App(
        models={"m": {"provider": "fake"}},
        roles={"chat": ["m"]},
        providers={"m": FakeProvider()},
        gateway={"cache": {"enabled": False}},
    )


def test_an_up_vote_joins_the_curation_queue_with_its_prompt_version_and_route(app):
    trace_id = _answered(app, "What is keel?", "A runtime for LLM apps.")
    vote = app.telemetry.feedback.record(trace_id, "up", comment="clear")
    assert vote.to_dict() == {
        "id": 1,
        "trace_id": trace_id,
        "rating": "up",
        "comment": "clear",
        "prompt_version": "ask@7",
        "route": "fast",
        "question": "What is keel?",
        "answer": "A runtime for LLM apps.",
        "curation_id": 1,
    }
    [candidate] = app.telemetry.feedback.curation_queue()
    assert (candidate["status"], candidate["question"], candidate["prompt_version"]) == (
        "pending",
        "What is keel?",
        "ask@7",
    )
    assert app.telemetry.feedback.few_shot_examples() == []
    app.telemetry.feedback.curate(candidate["id"], accept=True)
    assert app.telemetry.feedback.few_shot_examples("ask@7") == [
        {"id": candidate["id"], "question": "What is keel?", "answer": "A runtime for LLM apps."}
    ]
    assert app.telemetry.feedback.few_shot_examples("ask@6") == []


def test_down_votes_export_as_evaluation_cases(app):
    good = _answered(app, "2+2?", "4")
    bad1 = _answered(app, "Capital of France?", "Lyon")
    bad2 = _answered(app, "Who wrote Hamlet?", "Marlowe")
    fb = app.telemetry.feedback
    fb.record(good, "up")
    fb.record(bad1, "down", comment="wrong city")
    fb.record(bad2, "down")
    out = io.StringIO()
    assert fb.export_eval_cases(out) == 2
    cases = [json.loads(line) for line in out.getvalue().splitlines()]
    assert cases == [
        {
            "id": "feedback-2",
            "question": "Capital of France?",
            "rejected_answer": "Lyon",
            "comment": "wrong city",
            "trace_id": bad1,
            "prompt_version": "ask@7",
            "route": "fast",
            "source": "feedback",
        },
        {
            "id": "feedback-3",
            "question": "Who wrote Hamlet?",
            "rejected_answer": "Marlowe",
            "comment": None,
            "trace_id": bad2,
            "prompt_version": "ask@7",
            "route": "fast",
            "source": "feedback",
        },
    ]
    assert len(fb.curation_queue()) == 1


def test_a_vote_on_an_answer_that_sampling_did_not_trace_is_taken_from_its_cost_row():
    """sample_ratio 0.1 is a production setting: thumbs on the other nine answers must still count."""
    app = App(models={"m": {"provider": "fake"}}, roles={"chat": ["m"]}, providers={"m": FakeProvider()},
              gateway={"cache": {"enabled": False}}, telemetry={"sample_ratio": 0.0})
    trace_id = _answered(app, "What is keel?", "A runtime for LLM apps.")
    assert app.telemetry.traces.list() == []  # nothing was traced
    vote = app.telemetry.feedback.record(trace_id, "down", comment="too terse")
    assert (vote.rating, vote.route, vote.prompt_version, vote.question) == ("down", "fast", "ask@7", None)
    given = app.telemetry.feedback.record(trace_id, "up", question="What is keel?", answer="A runtime.")
    assert (given.question, given.curation_id) == ("What is keel?", 1)  # the caller may name what it saw
    with pytest.raises(NotFound, match="to attach feedback to"):
        app.telemetry.feedback.record("0" * 32, "up")


def test_bad_votes_get_typed_errors(app):
    trace_id = _answered(app, "q", "a")
    with pytest.raises(InputError, match="not up or down"):
        app.telemetry.feedback.record(trace_id, "meh")
    with pytest.raises(NotFound, match="no trace with id 'f00' to attach feedback to"):
        app.telemetry.feedback.record("f00", "up")
    with pytest.raises(NotFound, match="no curation candidate 99"):
        app.telemetry.feedback.curate(99, accept=False)


def test_the_cli_records_a_vote(app):
    trace_id = _answered(app, "q?", "a!")
    app.telemetry.flush()
    runner = CliRunner()
    result = runner.invoke(cli, ["feedback", trace_id, "down", "--comment", "made up", "--json"])
    assert result.exit_code == 0, result.output
    assert {k: v for k, v in json.loads(result.stdout).items() if k != "id"} == {
        "trace_id": trace_id,
        "rating": "down",
        "comment": "made up",
        "prompt_version": "ask@7",
        "route": "fast",
        "question": "q?",
        "answer": "a!",
        "curation_id": None,
    }
    assert runner.invoke(cli, ["feedback", trace_id, "sideways"]).exit_code != 0


def test_the_cli_curates_and_exports(app):
    good, bad = _answered(app, "q1", "a1"), _answered(app, "q2", "a2")
    fb = app.telemetry.feedback
    up = fb.record(good, "up")
    fb.record(bad, "down", comment="wrong")
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["curation", "--json"]).stdout)
    assert [(c["id"], c["question"], c["status"]) for c in listed] == [(up.curation_id, "q1", "pending")]
    accepted = runner.invoke(cli, ["curation", "accept", str(up.curation_id), "--json"])
    assert json.loads(accepted.stdout) == {"id": up.curation_id, "status": "accepted"}
    assert fb.few_shot_examples() == [{"id": up.curation_id, "question": "q1", "answer": "a1"}]
    assert runner.invoke(cli, ["curation", "reject", "999"]).exit_code != 0
    exported = runner.invoke(cli, ["curation", "evals", "--out", "cases.jsonl", "--json"])
    assert json.loads(exported.stdout) == {"cases": 1, "file": "cases.jsonl"}
    with open("cases.jsonl", encoding="utf-8") as fh:
        assert [json.loads(line)["question"] for line in fh] == ["q2"]


def test_the_cli_lists_accepted_candidates_and_says_where_an_acceptance_goes(app):
    up = app.telemetry.feedback.record(_answered(app, "q1", "a1"), "up")
    runner = CliRunner()
    accepted = runner.invoke(cli, ["curation", "accept", str(up.curation_id)])
    assert accepted.exit_code == 0
    assert "accepted: answer prompts show it for questions like it" in " ".join(accepted.output.split())
    listed = json.loads(runner.invoke(cli, ["curation", "--status", "accepted", "--json"]).stdout)
    assert [(c["id"], c["status"]) for c in listed] == [(up.curation_id, "accepted")]
    assert json.loads(runner.invoke(cli, ["curation", "--json"]).stdout) == []  # none pending now
    bad = runner.invoke(cli, ["curation", "--status", "done"])
    assert isinstance(bad.exception, InputError) and "unknown status 'done'" in str(bad.exception)


def test_votes_compare_prompt_versions_and_routes(app):
    fb = app.telemetry.feedback
    for rating, version, route in [("up", "v1", "fast"), ("down", "v1", "fast"), ("down", "v1", "agent"),
                                   ("up", "v2", "fast"), ("up", "v2", "fast")]:
        fb.record(_answered(app, "q", "a"), rating, prompt_version=version, route=route)
    assert fb.stats("prompt") == [
        {"key": "v1", "votes": 3, "up": 1, "down": 2, "up_share": 0.3333},
        {"key": "v2", "votes": 2, "up": 2, "down": 0, "up_share": 1.0},
    ]
    assert [(r["key"], r["votes"], r["up"]) for r in fb.stats("route")] == [("fast", 4, 3), ("agent", 1, 0)]
    assert fb.stats("prompt", since=time.time() + 60) == []
    with pytest.raises(InputError, match="cannot group feedback by 'user'"):
        fb.stats("user")
    shown = CliRunner().invoke(cli, ["curation", "stats", "--json"])
    assert json.loads(shown.stdout)["rows"][0]["key"] == "v1"
    table = CliRunner().invoke(cli, ["curation", "stats", "--by", "route"])
    assert table.exit_code == 0 and "75%" in table.stdout


def test_each_vote_is_counted_for_prometheus(app):
    app.telemetry.feedback.record(_answered(app, "q", "a"), "up")
    app.telemetry.feedback.record(_answered(app, "q", "a"), "down")
    app.telemetry.feedback.record(_answered(app, "q", "a"), "down", route="agent")
    text = app.telemetry.metrics.render().decode()
    assert 'keel_feedback_total{rating="up",route="fast"} 1.0' in text
    assert 'keel_feedback_total{rating="down",route="fast"} 1.0' in text
    assert 'keel_feedback_total{rating="down",route="agent"} 1.0' in text
