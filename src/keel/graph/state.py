"""The graph's typed state: what one request carries from node to node.

Plain JSON-able values only, so the SQLite (or Postgres) checkpointer can
store a paused run and any process can resume it. ``history`` is the one
field that accumulates across the requests of a session; everything else is
reset by the runtime at the start of each request.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

__all__ = ["GraphState", "add_usage", "fresh_request", "new_usage"]


class GraphState(TypedDict, total=False):
    # the request
    request_id: str
    #: the checkpoint thread: the session id, else the request id
    thread_id: str
    question: str
    kb: str
    kb_named: bool
    session_id: str
    user_id: str
    tenant_id: str
    schema: dict[str, Any] | None
    history: Annotated[list[dict[str, str]], operator.add]
    # input guard and router
    input_flags: list[str]
    blocked: str
    route: str
    route_reason: str
    needs_kb: bool
    route_decision: dict[str, Any]
    # retrieval and the agent loop
    sources: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    pending: list[dict[str, Any]]
    tool_log: list[dict[str, Any]]
    approval: dict[str, Any] | None
    steps: int
    # drafting and the quality guard
    producer: str
    draft: str
    refusal: str
    reasks: int
    problems: list[str]
    answer: str
    guardrail: dict[str, Any]
    # accounting
    usage: dict[str, Any]
    models: list[str]
    prompts: dict[str, str]
    #: ids of the accepted feedback examples the fast path's prompt showed
    curated_examples: list[int]
    clock_start: float
    paused_at: float
    error: dict[str, Any] | None


def new_usage() -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "model_calls": 0}


def add_usage(
    usage: dict[str, Any], *, input_tokens: int, output_tokens: int, cost_usd: float, calls: int = 1
) -> dict[str, Any]:
    return {
        "input_tokens": usage["input_tokens"] + input_tokens,
        "output_tokens": usage["output_tokens"] + output_tokens,
        "cost_usd": usage["cost_usd"] + cost_usd,
        "model_calls": usage["model_calls"] + calls,
    }


def fresh_request(**request: Any) -> dict[str, Any]:
    """The input of one request: its own fields set, every per-request field reset."""
    return {
        "input_flags": [],
        "blocked": "",
        "route": "",
        "route_reason": "",
        "needs_kb": False,
        "route_decision": {},
        "sources": [],
        "messages": [],
        "pending": [],
        "tool_log": [],
        "approval": None,
        "steps": 0,
        "producer": "",
        "draft": "",
        "refusal": "",
        "reasks": 0,
        "problems": [],
        "answer": "",
        "guardrail": {},
        "usage": new_usage(),
        "models": [],
        "prompts": {},
        "curated_examples": [],
        "paused_at": 0.0,
        "error": None,
        "schema": None,
        **request,
    }
