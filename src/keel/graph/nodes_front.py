"""The front of the graph: input guard, router, retrieval."""

from __future__ import annotations

import json
import math
from typing import Any

from openinference.semconv.trace import SpanAttributes as SA

from ..guardrails import content_words, scan_input
from ..knowledge.types import SearchHit
from ..models.base import Message
from ..telemetry.spans import set_retrieval_documents
from .deps import GraphDeps
from .modelcall import call_model
from .tracing import KIND, set_attrs, span

__all__ = ["input_guard", "judge_with_model", "relevant", "retrieve", "route"]


def input_guard(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    with span(deps.tracer, "keel.guard.input", KIND.GUARDRAIL, **{SA.INPUT_VALUE: state["question"]}) as current:
        verdict = scan_input(state["question"], deps.settings.guardrails)
        set_attrs(current, **{"keel.blocked": verdict.blocked, "keel.flags": verdict.flags})
    deps.audit(
        "input_guard",
        {
            "request_id": state["request_id"],
            # who asked: the first record of every request names them
            "user_id": state.get("user_id", ""),
            "session_id": state.get("session_id", ""),
            "tenant_id": state.get("tenant_id", ""),
            "blocked": verdict.blocked,
            "reason": verdict.reason,
            "flags": verdict.flags,
        },
    )
    return {"blocked": verdict.reason if verdict.blocked else "", "input_flags": verdict.flags}


def judge_with_model(deps: GraphDeps, state: dict[str, Any], update: dict[str, Any]) -> Any:
    """The router's judge: the cheap model picks a label under constrained decoding."""
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["chat", "kb", "agent"]}, "why": {"type": "string", "maxLength": 80}},
        "required": ["label", "why"],
        "additionalProperties": False,
    }

    def judge(question: str) -> tuple[str, str]:
        prompt = deps.prompts.render("route_judge", question=question)
        response, accounting = call_model(
            deps,
            state,
            role=deps.judge_role,
            purpose="route_judge",
            prompt=prompt,
            messages=[Message(role="user", content=prompt.text)],
            json_schema=schema,
            max_tokens=48,
        )
        update.update(accounting)
        data = json.loads(response.text)
        return str(data["label"]), str(data.get("why", ""))[:80]

    return judge


def route(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    update: dict[str, Any] = {}
    judge = judge_with_model(deps, state, update) if deps.settings.router.judge else None
    with span(deps.tracer, "keel.router", KIND.CHAIN, **{SA.INPUT_VALUE: state["question"]}) as current:
        decision = deps.router.decide(state["question"], kb_named=state.get("kb_named", False), judge=judge)
        set_attrs(
            current,
            **{
                "keel.route": decision.route,
                "keel.route_reason": decision.reason,
                "keel.route_stage": decision.stage,
                "keel.route_scores": decision.scores,
                "keel.needs_kb": decision.needs_kb,
            },
        )
    deps.audit("route", {"request_id": state["request_id"], **decision.to_dict()})
    return {
        **update,
        "route": decision.route,
        "route_reason": decision.reason,
        "needs_kb": decision.needs_kb,
        "route_decision": decision.to_dict(),
    }


def relevant(question: str, hit: SearchHit, min_score: float) -> bool:
    """A hit counts when it scores high enough and shares at least half the question's content words."""
    if hit.score < min_score:
        return False
    wanted = content_words(question)
    if not wanted:
        return True
    have = content_words(f"{hit.title} {hit.text}")
    return len(wanted & have) >= math.ceil(len(wanted) / 2)


def retrieve(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    if deps.retriever is None:
        deps.audit("retrieval", {"request_id": state["request_id"], "kb": state["kb"], "error": "no retriever"})
        return {"sources": []}
    with span(
        deps.tracer, "keel.retrieve", KIND.RETRIEVER, **{SA.INPUT_VALUE: state["question"], "keel.kb": state["kb"]}
    ) as current:
        hits = deps.retriever.search(state["question"], kb=state["kb"], k=deps.k)
        kept = [h for h in hits if relevant(state["question"], h, deps.settings.guardrails.min_source_score)]
        set_attrs(current, **{"keel.hits": len(hits), "keel.relevant": len(kept)})
        # OpenInference's flattened form: retrieval.documents.N.document.{id,score,content,metadata}
        set_retrieval_documents(current, kept)
    deps.audit(
        "retrieval",
        {
            "request_id": state["request_id"],
            "kb": state["kb"],
            "sources": [{"id": h.id, "score": round(h.score, 4)} for h in kept],
            "dropped_as_irrelevant": [h.id for h in hits if h not in kept],
        },
    )
    return {"sources": [h.to_source() for h in kept]}
