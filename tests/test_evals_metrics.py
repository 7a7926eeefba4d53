"""Scoring one case and a run: answer checks, retrieval ranks, route, status, latency and cost."""

from __future__ import annotations

from typing import Any

import pytest

from keel.evals import EvalCase, aggregate, score_case, token_f1
from keel.evals.metrics import normalize, outcome_of, retrieval_scores, source_matches


def answer(text: str = "", **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": "answered", "answer": text, "route": "fast", "route_reason": "rule", "sources": [],
        "guardrail": {"verdict": "pass", "groundedness": 0.9}, "models": ["m"], "trace_id": "t1",
        "latency_ms": 100.0, "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001, "model_calls": 1},
    }
    out.update(overrides)
    return out


def src(uri: str, n: int = 0) -> dict[str, Any]:
    return {"id": f"{uri}#{n}", "uri": uri, "title": uri, "score": 0.5, "text": "..."}


def test_normalize_and_token_f1() -> None:
    assert normalize("  The Answer, is: NONE! ") == "answer is none"
    assert token_f1("None", "none.") == 1.0
    assert token_f1("it returns None", "None") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a b", "c d") == 0.0


def test_answer_checks_and_their_failures_in_words() -> None:
    case = EvalCase(id="c", question="q", expected_answer="a null operation",
                    must_contain=["pass", "placeholder"], must_not_contain=["Java"])
    good = score_case(case, answer("pass is a null operation; use it as a placeholder."))
    assert good.passed and good.scores == {"exact": 0.0, "contains": 1.0, "f1": 0.4,
                                           "must_contain": 1.0, "clean": 1.0, "correct": 1.0}
    bad = score_case(case, answer("In Java, pass skips."))
    assert not bad.passed
    assert bad.scores["must_contain"] == 0.5 and bad.scores["clean"] == 0.0 and bad.scores["correct"] == 0.0
    assert bad.failures == ["answer differs from the expected one (token F1 0.00 < 0.5)",
                            "answer lacks 'placeholder'", "answer holds forbidden 'Java'"]


def test_containment_ignores_case_spacing_and_punctuation() -> None:
    case = EvalCase(id="c", question="q", must_contain=["7006652", "context manager"])
    assert score_case(case, answer("It is 7,006,652 via a Context\n Manager.")).passed


def test_retrieval_matches_uri_doc_id_or_chunk_and_ranks() -> None:
    sources = [src("pydoc:for"), src("pydoc:break", 2), src("pydoc:while")]
    assert source_matches(sources[1], "pydoc:break") and source_matches(sources[1], "pydoc:break#2")
    assert source_matches({"id": "abc#4", "doc_id": "abc"}, "abc")
    assert not source_matches(sources[0], "pydoc:fo")
    assert retrieval_scores(sources, ["pydoc:break"], k=5) == {"hit@k": 1.0, "recall@k": 1.0, "rr": 0.5}
    assert retrieval_scores(sources, ["pydoc:while", "pydoc:assert"], k=2) == {"hit@k": 0.0, "recall@k": 0.0,
                                                                              "rr": 0.0}
    case = EvalCase(id="c", question="q", expected_sources=["pydoc:while", "pydoc:nope"])
    row = score_case(case, answer("x", sources=sources), k=3)
    assert row.scores == {"hit@k": 1.0, "recall@k": 0.5, "rr": pytest.approx(0.3333)}
    assert row.sources == ["pydoc:for", "pydoc:break", "pydoc:while"] and row.passed


@pytest.mark.parametrize(
    ("status", "verdict", "outcome"),
    [("answered", "pass", "answered"), ("answered", "fallback", "answered"), ("answered", "refused", "refused"),
     ("answered", "blocked", "blocked"), ("stopped", None, "stopped"), ("pending_approval", None, "pending_approval")],
)
def test_outcome_tells_refusals_and_blocks_apart(status: str, verdict: str | None, outcome: str) -> None:
    assert outcome_of({"status": status, "guardrail": {"verdict": verdict} if verdict else {}}) == outcome


def test_route_status_and_rejected_answer_checks() -> None:
    case = EvalCase(id="c", question="q", expected_route="agent", expected_status="refused",
                    rejected_answer="Two plus two is five.")
    row = score_case(case, answer("Two plus two is five."))
    assert row.scores == {"route": 0.0, "status": 0.0, "not_rejected": 0.0}
    assert row.failures == ["route fast (expected agent)", "answered (expected refused)",
                            "gave the down-voted answer again"]
    fixed = score_case(case, answer("I don't know.", route="agent", guardrail={"verdict": "refused"}))
    assert fixed.passed and fixed.outcome == "refused" and fixed.groundedness is None


def test_a_case_that_did_not_run_fails_every_rate_it_counts_in() -> None:
    cases = [EvalCase(id="ok", question="q", must_contain=["x"], expected_sources=["d"], expected_status="answered"),
             EvalCase(id="boom", question="q", must_contain=["x"], expected_sources=["d"],
                      expected_status="answered")]
    ok = score_case(cases[0], answer("x", sources=[src("d")], latency_ms=100.0))
    boom = score_case(cases[1], None, error={"error": "timeout", "message": "took too long"})
    assert (boom.outcome, boom.passed, boom.failures) == ("error", False, ["no answer: took too long"])
    m = aggregate(cases, [ok, boom])
    assert (m["cases"], m["passed"], m["errors"], m["pass_rate"], m["error_rate"]) == (2, 1, 1, 0.5, 0.5)
    assert (m["answer.correct"], m["answer.must_contain"], m["retrieval.hit@k"], m["status.accuracy"]) == (
        0.5, 0.5, 0.5, 0.5)
    assert m["latency.p50_ms"] == 100.0 and m["outcomes"] == {"answered": 1, "error": 1}


def test_aggregate_means_percentiles_costs_and_distributions() -> None:
    cases = [EvalCase(id=str(i), question="q", expected_status="answered" if i < 3 else "refused")
             for i in range(4)]
    verdicts = ["pass", "fallback", "refused", "pass"]
    results = [
        score_case(c, answer("a", latency_ms=float(ms), guardrail={"verdict": v, "groundedness": g},
                             usage={"cost_usd": 0.01, "model_calls": calls, "input_tokens": 3, "output_tokens": 2}))
        for c, ms, v, g, calls in zip(cases, [10, 20, 30, 400], verdicts, [1.0, 0.5, None, 0.9], [1, 2, 0, 3],
                                      strict=True)
    ]
    m = aggregate(cases, results)
    assert m["latency.p50_ms"] == 20.0 and m["latency.p95_ms"] == 400.0 and m["latency.mean_ms"] == 115.0
    assert m["cost.total_usd"] == pytest.approx(0.04) and m["cost.per_case_usd"] == pytest.approx(0.01)
    assert (m["model_calls.total"], m["model_calls.per_case"], m["tokens.input"], m["tokens.output"]) == (6, 1.5, 12, 8)
    assert m["guardrail.verdicts"] == {"fallback": 1, "pass": 2, "refused": 1}
    # of the three answered cases, the guard took two drafts as they were and replaced one (fallback)
    assert m["guardrail.groundedness"] == pytest.approx(0.8) and m["guardrail.pass_rate"] == 0.6667
    # case 2 expected answered but was refused; case 3 expected refused but answered
    assert (m["status.accuracy"], m["status.false_refusals"], m["status.missed_refusals"]) == (0.5, 1, 1)
    assert m["retrieval.hit@k"] is None and m["answer.f1"] is None and m["judge.score"] is None


def test_a_stopped_or_paused_run_fails_unless_the_case_expects_it() -> None:
    stopped = answer("", status="stopped", error={"error": "budget_exceeded", "message": "budget 'user:u' would be "
                                                  "exceeded"})
    row = score_case(EvalCase(id="c", question="q"), stopped)
    assert (row.passed, row.outcome, row.failures) == (False, "stopped", ["stopped: budget 'user:u' would be exceeded"])
    assert row.error == {"error": "budget_exceeded", "message": "budget 'user:u' would be exceeded"}
    paused = answer("Waiting.", status="pending_approval", approval={"id": "a1"})
    assert score_case(EvalCase(id="c", question="q"), paused).failures == [
        "pending_approval: waiting for a person's approval"]
    assert score_case(EvalCase(id="c", question="q", expected_status="pending_approval"), paused).passed
