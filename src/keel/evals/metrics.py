"""Scoring: one case against its expectations, then the whole run.

Per case (each only when the case carries the expectation):

- answer: ``exact`` (normalised equality with ``expected_answer``), ``contains``
  (the expected answer inside the answer), ``f1`` (SQuAD-style token F1),
  ``must_contain`` (share of the required strings present), ``clean`` (no
  forbidden string present); the case's answer is *correct* when every
  required string is present, none forbidden is, and the expected answer is
  contained or reaches ``f1_threshold``.
- retrieval: the answer's sources in their order, matched against
  ``expected_sources`` by uri, document id or chunk id: ``hit@k``,
  ``recall@k`` and reciprocal rank (0 when none of the first k matches).
- route, status: equality with ``expected_route`` / ``expected_status``. A run
  that stopped (a limit, a budget) or paused for approval fails its case
  unless the case expects exactly that.
- not_rejected: the new answer's token F1 with a down-voted answer stays
  below ``REJECTED_F1`` (it is not the same answer again).

Aggregates are means over the cases that carry each expectation (None when
none does), plus latency percentiles, cost and model calls over every case
that ran. Errors count as failures in every rate they have an expectation for.
``guardrail.groundedness`` is the mean over answers the guard scored;
``guardrail.pass_rate`` the share of answered cases whose draft it accepted
(pass or revised) instead of replacing it with quoted sources (fallback).
"""

from __future__ import annotations

import math
import re
import statistics
import string
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .dataset import EvalCase

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "CaseResult",
    "aggregate",
    "normalize",
    "outcome_of",
    "retrieval_scores",
    "score_case",
    "source_matches",
    "token_f1",
]

#: a new answer this close (token F1) to the down-voted one counts as the same answer
REJECTED_F1 = 0.9
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)

#: metrics a regression gate compares, and which way is better
HIGHER_IS_BETTER = (
    "pass_rate",
    "answer.correct",
    "answer.exact",
    "answer.contains",
    "answer.f1",
    "answer.must_contain",
    "answer.clean",
    "answer.not_rejected",
    "retrieval.hit@k",
    "retrieval.recall@k",
    "retrieval.mrr",
    "route.accuracy",
    "status.accuracy",
    "guardrail.groundedness",
    "guardrail.pass_rate",
    "judge.score",
)
LOWER_IS_BETTER = (
    "error_rate",
    "latency.p50_ms",
    "latency.p95_ms",
    "latency.mean_ms",
    "cost.total_usd",
    "cost.per_case_usd",
    "model_calls.per_case",
    "status.false_refusals",
    "status.missed_refusals",
)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _has(answer: str, needle: str) -> bool:
    """Case- and whitespace-insensitive containment; punctuation-insensitive as a second chance."""
    flat = " ".join(answer.lower().split())
    want = " ".join(needle.lower().split())
    if want in flat:
        return True
    loose = normalize(needle)
    return bool(loose) and f" {loose} " in f" {normalize(answer)} "


def source_matches(source: dict[str, Any], expected: str) -> bool:
    """A source matches by uri, document id, chunk id, or a chunk id of that document (``doc#n``)."""
    sid = str(source.get("id") or "")
    keys = {str(source.get("uri") or ""), str(source.get("doc_id") or ""), sid}
    return expected in keys or sid.startswith(expected + "#")


def retrieval_scores(sources: list[dict[str, Any]], expected: list[str], k: int) -> dict[str, float]:
    """hit@k, recall@k and reciprocal rank of the first matching source among the first k."""
    top = sources[:k]
    first = next((i for i, s in enumerate(top, 1) if any(source_matches(s, e) for e in expected)), None)
    found = sum(1 for e in expected if any(source_matches(s, e) for s in top))
    return {
        "hit@k": float(first is not None),
        "recall@k": found / len(expected),
        "rr": 1.0 / first if first else 0.0,
    }


def outcome_of(answer: dict[str, Any]) -> str:
    """answered / refused / blocked (the guardrail's verdict) or stopped / pending_approval (the status)."""
    status = answer.get("status", "")
    if status in ("stopped", "pending_approval"):
        return str(status)
    verdict = (answer.get("guardrail") or {}).get("verdict")
    return str(verdict) if verdict in ("refused", "blocked") else "answered"


@dataclass
class CaseResult:
    """One case's run and scores, as a report row."""

    id: str
    question: str
    tags: list[str]
    expectations: list[str]
    passed: bool
    outcome: str
    #: check name -> score in [0, 1] (only the checks this case carries)
    scores: dict[str, float] = field(default_factory=dict)
    #: what failed, in words
    failures: list[str] = field(default_factory=list)
    answer: str = ""
    status: str = ""
    route: str = ""
    route_reason: str = ""
    verdict: str | None = None
    groundedness: float | None = None
    sources: list[str] = field(default_factory=list)
    trace_id: str | None = None
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    #: {"error": code, "message": ...} when the case could not run, timed out, or the run stopped
    error: dict[str, Any] | None = None
    #: the optional LLM judge's {"score", "why"}; None when not asked
    judge: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score_answer(case: EvalCase, text: str, f1_threshold: float, scores: dict[str, float],
                  failures: list[str]) -> None:
    correct = True
    if case.expected_answer is not None:
        scores["exact"] = float(normalize(text) == normalize(case.expected_answer))
        scores["contains"] = float(_has(text, case.expected_answer))
        scores["f1"] = round(token_f1(text, case.expected_answer), 4)
        if not scores["contains"] and scores["f1"] < f1_threshold:
            correct = False
            failures.append(f"answer differs from the expected one (token F1 {scores['f1']:.2f} < {f1_threshold})")
    if case.must_contain:
        missing = [s for s in case.must_contain if not _has(text, s)]
        scores["must_contain"] = round(1 - len(missing) / len(case.must_contain), 4)
        if missing:
            correct = False
            failures.append("answer lacks " + ", ".join(repr(s) for s in missing))
    if case.must_not_contain:
        present = [s for s in case.must_not_contain if _has(text, s)]
        scores["clean"] = float(not present)
        if present:
            correct = False
            failures.append("answer holds forbidden " + ", ".join(repr(s) for s in present))
    if case.expected_answer is not None or case.must_contain or case.must_not_contain:
        scores["correct"] = float(correct)


def score_case(case: EvalCase, answer: dict[str, Any] | None, *, k: int = 5, f1_threshold: float = 0.5,
               error: dict[str, Any] | None = None) -> CaseResult:
    """Score one case against an answer (``Answer.to_dict()``), or as failed when ``answer`` is None."""
    result = CaseResult(case.id, case.question, list(case.tags), case.expectations(), passed=False,
                        outcome="error", error=error)
    if answer is None:
        result.failures.append(f"no answer: {(error or {}).get('message', 'the case did not run')}")
        return result
    text = str(answer.get("answer") or "")
    guardrail, usage = answer.get("guardrail") or {}, answer.get("usage") or {}
    sources = list(answer.get("sources") or [])
    result.outcome = outcome_of(answer)
    result.answer, result.status = text, str(answer.get("status", ""))
    result.route, result.route_reason = str(answer.get("route") or ""), str(answer.get("route_reason") or "")
    result.verdict, result.groundedness = guardrail.get("verdict"), guardrail.get("groundedness")
    result.sources = [str(s.get("uri") or s.get("id") or "") for s in sources]
    result.trace_id = answer.get("trace_id")
    result.latency_ms = float(answer.get("latency_ms") or 0.0)
    result.cost_usd = float(usage.get("cost_usd") or 0.0)
    result.input_tokens = int(usage.get("input_tokens") or 0)
    result.output_tokens = int(usage.get("output_tokens") or 0)
    result.model_calls = int(usage.get("model_calls") or 0)
    if error is None and answer.get("error"):
        result.error = answer["error"]
    scores, failures = result.scores, result.failures

    _score_answer(case, text, f1_threshold, scores, failures)
    if case.expected_sources:
        r = retrieval_scores(sources, case.expected_sources, k)
        scores.update({"hit@k": r["hit@k"], "recall@k": round(r["recall@k"], 4), "rr": round(r["rr"], 4)})
        if not r["hit@k"]:
            failures.append(f"no expected source in the top {k} ({', '.join(case.expected_sources)})")
    if case.expected_route is not None:
        scores["route"] = float(result.route == case.expected_route)
        if not scores["route"]:
            failures.append(f"route {result.route or '-'} (expected {case.expected_route})")
    if case.expected_status is not None:
        scores["status"] = float(result.outcome == case.expected_status)
        if not scores["status"]:
            failures.append(f"{result.outcome} (expected {case.expected_status})")
    if case.expected_status is None and result.outcome in ("stopped", "pending_approval"):
        why = (result.error or {}).get("message") or "waiting for a person's approval"
        failures.append(f"{result.outcome}: {why}")
    if case.rejected_answer is not None:
        same = token_f1(text, case.rejected_answer) >= REJECTED_F1
        scores["not_rejected"] = float(not same)
        if same:
            failures.append("gave the down-voted answer again")
    result.passed = not failures
    return result


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: a reported p95 is a latency some case had)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 2)


_ANSWER_CHECKS = {"expected_answer", "must_contain", "must_not_contain"}


def _over(results: list[CaseResult], expectation: str, score: str) -> float | None:
    """Mean of a score over the cases carrying the expectation; a case that did not run scores 0."""
    values = [r.scores.get(score, 0.0) for r in results if expectation in r.expectations]
    return _mean(values)


def _status_errors(cases: list[EvalCase], results: list[CaseResult]) -> tuple[int, int]:
    expected_of = {c.id: c.expected_status for c in cases}
    false_refusals = missed = 0
    for r in results:
        expected = expected_of.get(r.id)
        if expected == "answered" and r.outcome in ("refused", "blocked"):
            false_refusals += 1
        elif expected in ("refused", "blocked") and r.outcome == "answered":
            missed += 1
    return false_refusals, missed


def aggregate(cases: list[EvalCase], results: list[CaseResult]) -> dict[str, Any]:
    """The run's metrics (flat names, None where no case carries the expectation)."""
    ran = [r for r in results if r.outcome != "error"]
    n = len(results)
    latencies = [r.latency_ms for r in ran]
    grounded = [float(r.groundedness) for r in ran if r.groundedness is not None]
    verdicts = [r.verdict for r in ran if r.verdict]
    cost = sum(r.cost_usd for r in results)
    false_refusals, missed = _status_errors(cases, results)
    with_status = any("status" in r.expectations for r in results)
    return {
        "cases": n,
        "passed": sum(r.passed for r in results),
        "errors": n - len(ran),
        "pass_rate": _mean([float(r.passed) for r in results]),
        "error_rate": round((n - len(ran)) / n, 4) if n else None,
        "answer.correct": _mean([r.scores.get("correct", 0.0) for r in results
                                 if _ANSWER_CHECKS & set(r.expectations)]),
        "answer.exact": _over(results, "expected_answer", "exact"),
        "answer.contains": _over(results, "expected_answer", "contains"),
        "answer.f1": _over(results, "expected_answer", "f1"),
        "answer.must_contain": _over(results, "must_contain", "must_contain"),
        "answer.clean": _over(results, "must_not_contain", "clean"),
        "answer.not_rejected": _over(results, "not_rejected", "not_rejected"),
        "retrieval.hit@k": _over(results, "retrieval", "hit@k"),
        "retrieval.recall@k": _over(results, "retrieval", "recall@k"),
        "retrieval.mrr": _over(results, "retrieval", "rr"),
        "route.accuracy": _over(results, "route", "route"),
        "status.accuracy": _over(results, "status", "status"),
        "status.false_refusals": false_refusals if with_status else None,
        "status.missed_refusals": missed if with_status else None,
        "guardrail.groundedness": _mean(grounded),
        "guardrail.pass_rate": _mean([float(r.verdict in ("pass", "revised")) for r in ran
                                      if r.outcome == "answered"]),
        "guardrail.verdicts": dict(sorted(Counter(verdicts).items())),
        "outcomes": dict(sorted(Counter(r.outcome for r in results).items())),
        "latency.p50_ms": _percentile(latencies, 50),
        "latency.p95_ms": _percentile(latencies, 95),
        "latency.mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "cost.total_usd": round(cost, 8),
        "cost.per_case_usd": round(cost / n, 8) if n else None,
        "tokens.input": sum(r.input_tokens for r in results),
        "tokens.output": sum(r.output_tokens for r in results),
        "model_calls.total": sum(r.model_calls for r in results),
        "model_calls.per_case": round(sum(r.model_calls for r in results) / n, 4) if n else None,
        "judge.score": _mean([float(r.judge["score"]) for r in results
                              if r.judge and r.judge.get("score") is not None]),
    }

