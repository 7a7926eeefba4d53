"""Drafting on the fast path, the quality guard, and the response."""

from __future__ import annotations

import hashlib
from typing import Any

from openinference.semconv.trace import SpanAttributes as SA

from ..guardrails import extractive_answer, find_pii, find_secrets, redact, without_repeats
from ..models.base import Message
from .deps import GraphDeps
from .excerpt import focused_sources
from .modelcall import call_model
from .tracing import KIND, set_attrs, span

__all__ = ["blocked_response", "fast_answer", "quality", "respond"]


def _no_sources_refusal(state: dict[str, Any]) -> str:
    return (
        f"I found nothing relevant in the knowledge base {state['kb']!r} for this question, "
        "so I will not guess. Add the documents that cover it (keel ingest) and ask again."
    )


def _history_messages(state: dict[str, Any]) -> list[Message]:
    out = []
    for turn in (state.get("history") or [])[-3:]:
        out += [Message(role="user", content=turn["question"]), Message(role="assistant", content=turn["answer"])]
    return out


def fast_answer(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    sources = state.get("sources") or []
    if state.get("needs_kb") and not sources:
        return {"producer": "fast", "refusal": _no_sources_refusal(state), "draft": ""}
    examples = deps.curated.select(state["question"]) if deps.curated is not None else []
    if sources:
        prompt = deps.prompts.render(
            "answer_sources", sources=focused_sources(state["question"], sources), examples=examples
        )
    else:
        prompt = deps.prompts.render("answer_chat", history=bool(state.get("history")), examples=examples)
    shown = [e["id"] for e in examples]
    messages = [
        Message(role="system", content=prompt.text, cache_breakpoint=True),
        *_history_messages(state),
        Message(role="user", content=state["question"]),
    ]
    if state.get("problems"):
        reask = deps.prompts.render("reask", problems=state["problems"])
        messages += [
            Message(role="assistant", content=state.get("draft", "")),
            Message(role="user", content=reask.text),
        ]
    response, accounting = call_model(
        deps,
        state,
        role=deps.fast_role,
        purpose="answer",
        prompt=prompt,
        messages=messages,
        json_schema=state.get("schema"),
        max_tokens=160,
        attributes={"keel.examples.curated": shown} if shown else None,
    )
    draft = response.text.strip()
    if response.finish_reason == "length" and state.get("schema") is None:
        draft = complete_sentences(draft)
    update = {**accounting, "producer": "fast", "draft": draft}
    if shown:  # which accepted examples the draft saw, for the answer's audit record
        update["curated_examples"] = shown
    return update


def complete_sentences(text: str) -> str:
    """Drop the sentence the token limit cut off, if an earlier one ended."""
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("? "), text.rfind("! "))
    if text.endswith((".", "?", "!", "]")) or end < 0:
        return text
    return text[: end + 1]


def blocked_response(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    guardrail = {
        "verdict": "blocked",
        "groundedness": None,
        "reason": state["blocked"],
        "checks": [{"name": "input", "passed": False, "detail": state["blocked"]}],
    }
    deps.audit("guardrail", {"request_id": state["request_id"], "stage": "input", **guardrail})
    return {
        "answer": f"I can't help with that: {state['blocked']}.",
        "guardrail": guardrail,
        "route": "blocked",
        "route_reason": "input guard: " + state["blocked"],
    }


def _verdict(verdict: str, report: Any, reason: str = "") -> dict[str, Any]:
    out = {
        "verdict": verdict,
        "groundedness": None if report is None else report.groundedness,
        "checks": [] if report is None else [c.to_dict() for c in report.checks],
    }
    if reason:
        out["reason"] = reason
    return out


def _give_up(state: dict[str, Any], report: Any) -> tuple[str, dict[str, Any]]:
    """After the re-ask failed: quote the sources, else withhold what leaked, else refuse."""
    sources = list(state.get("sources") or [])
    sources += [
        {"text": t["result"], "score": 0.0, "label": t["tool"]} for t in state.get("tool_log") or [] if t.get("ok")
    ]
    quoted = extractive_answer(state["question"], sources) if sources else ""
    if quoted:
        failed = ", ".join(c.name for c in report.checks if not c.passed)
        return quoted, _verdict("fallback", report, f"the answer failed {failed}; quoting the sources instead")
    leaks = find_secrets(state["draft"]) + find_pii(state["draft"])
    if leaks:
        return redact(state["draft"], leaks), _verdict("blocked", report, "the answer contained secrets or PII")
    return (
        "I could not produce an answer that passes the quality checks: " + "; ".join(report.problems[:3]),
        _verdict("refused", report, "failed the quality checks twice"),
    )


def quality(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    with span(deps.tracer, "keel.guard.quality", KIND.GUARDRAIL, **{SA.INPUT_VALUE: state.get("draft", "")}) as cur:
        update = _judge_draft(state, deps)
        set_attrs(
            cur,
            **{
                "keel.verdict": update.get("guardrail", {}).get("verdict", "reask"),
                "keel.groundedness": update.get("guardrail", {}).get("groundedness"),
                "keel.problems": update.get("problems"),
            },
        )
    verdict = update.get("guardrail", {}).get("verdict", "reask")
    deps.audit(
        "guardrail",
        {
            "request_id": state["request_id"],
            "stage": "output",
            "verdict": verdict,
            "reasks": state.get("reasks", 0),
            "problems": update.get("problems", []),
            "guardrail": update.get("guardrail"),
        },
    )
    return update


def _judge_draft(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    if state.get("refusal"):
        return {"answer": state["refusal"], "guardrail": _verdict("refused", None, "nothing relevant retrieved")}
    # the evidence: retrieved passages and what tools returned
    evidence = [s["text"] for s in state.get("sources") or []]
    evidence += [t["result"] for t in state.get("tool_log") or [] if t.get("ok")]
    if state.get("needs_kb") and not evidence and not state.get("messages"):
        # the agent finished without a relevant passage or a tool result to stand on
        return {
            "answer": _no_sources_refusal(state),
            "guardrail": _verdict("refused", None, "nothing relevant retrieved"),
        }
    report = deps.guard.check(state["draft"], question=state["question"], sources=evidence, schema=state.get("schema"))
    if report.passed:
        verdict = "revised" if state.get("reasks", 0) else "pass"
        return {"answer": state["draft"], "guardrail": _verdict(verdict, report), "problems": []}
    if [c.name for c in report.checks if not c.passed] == ["repetition"]:
        repaired = without_repeats(state["draft"])
        again = deps.guard.check(repaired, question=state["question"], sources=evidence, schema=state.get("schema"))
        if again.passed:
            return {
                "answer": repaired,
                "problems": [],
                "guardrail": _verdict("revised", again, "repeated sentences removed"),
            }
    if state.get("reasks", 0) < deps.settings.guardrails.max_reasks:
        return {"reasks": state.get("reasks", 0) + 1, "problems": report.problems}
    answer, guardrail = _give_up(state, report)
    return {"answer": answer, "guardrail": guardrail, "problems": report.problems}


def respond(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    answer = state.get("answer", "")
    record = {
        "request_id": state["request_id"],
        "route": state.get("route"),
        "models": state.get("models", []),
        "prompts": state.get("prompts", {}),
        "usage": state.get("usage"),
        "verdict": (state.get("guardrail") or {}).get("verdict"),
        "answer_sha256": hashlib.sha256(answer.encode()).hexdigest(),
    }
    if state.get("curated_examples"):
        record["curated_examples"] = state["curated_examples"]
    deps.audit("answer", record)
    return {"history": [{"question": state["question"], "answer": answer}]}
