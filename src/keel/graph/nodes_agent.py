"""The agent loop: reason, call tools, wait for a person when a tool is risky.

``agent_reason`` picks the next action (a rule, else the model under
constrained decoding). ``run_tools`` runs safe calls and feeds results, errors
included, back to the model; a call that needs approval is recorded in the
approval store and hands over to ``await_approval``, which pauses the run with
``interrupt()``. The run resumes only through the runtime, after a person's
decision in the store; the call then runs only if the store lets the approval
be consumed for exactly these arguments.

A cancelled run calls no further tool and asks for no further approval: the
node checks before it starts, and between calls it keeps what already ran and
leaves the rest pending for the next node, which stops the run. An approved
call resumed by a person always runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from langgraph.types import interrupt
from openinference.semconv.trace import SpanAttributes as SA

from .._cancel import cancel_requested
from ..models.base import Message, ToolCall
from ..tools import ApprovalInvalid
from .actions import FINAL, Action, action_schema, parse_action, plan_by_rule, shortlist
from .deps import GraphDeps, audit_durable
from .excerpt import focused_sources
from .limits import check_steps
from .modelcall import call_model
from .tracing import KIND, set_attrs, span

__all__ = ["agent_reason", "await_approval", "run_tools"]


def _transcript(state: dict[str, Any]) -> list[Message]:
    return [Message.model_validate(m) for m in state.get("messages") or []]


def _repeat_of_done_call(action: Action, state: dict[str, Any]) -> dict[str, Any] | None:
    """A call identical to one that already succeeded: the task is done, do not run it twice."""
    for entry in state.get("tool_log") or []:
        if entry["ok"] and entry["tool"] == action.tool and entry["args"] == action.args:
            return entry
    return None


def _offered(state: dict[str, Any], deps: GraphDeps, examples: list[dict[str, Any]]) -> set[str]:
    """After a rule-planned call succeeded, the task the rule saw is done: only finishing is offered.
    Otherwise the tools the nearest examples use (and any without examples)."""
    log = state.get("tool_log") or []
    if log and all(e["planner"] == "rule" and e["ok"] for e in log):
        return {FINAL}
    return shortlist(deps.tools, examples, deps.examples.examples)


def _model_action(state: dict[str, Any], deps: GraphDeps) -> tuple[Action, dict[str, Any]]:
    examples = deps.examples.select(state["question"], k=3)
    offered = _offered(state, deps, examples)
    shown = [e for e in examples if e["action"]["tool"] in offered] or deps.examples.select(
        state["question"], k=2, where=lambda e: e["action"]["tool"] in offered
    )
    prompt = deps.prompts.render(
        "agent_step",
        tools=[t.spec() for t in deps.tools if t.name in offered],
        sources=focused_sources(state["question"], state.get("sources") or []),
        examples=shown,
    )
    messages = [
        Message(role="system", content=prompt.text, cache_breakpoint=True),
        Message(role="user", content=f"Task: {state['question']}"),
        *_transcript(state),
    ]
    if state.get("problems"):
        messages.append(Message(role="user", content=deps.prompts.render("reask", problems=state["problems"]).text))
    response, accounting = call_model(
        deps,
        state,
        role=deps.agent_role,
        purpose="agent_step",
        prompt=prompt,
        messages=messages,
        json_schema=action_schema(deps.tools, offered),
        max_tokens=200,
    )
    return parse_action(response), accounting


def agent_reason(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    check_steps(state, deps.settings.limits)
    update: dict[str, Any] = {"producer": "agent", "steps": state.get("steps", 0) + 1}
    hint = (state.get("route_decision") or {}).get("tool_hint")
    action = plan_by_rule(state["question"], hint, deps.tools) if not state.get("tool_log") else None
    if action is None:
        action, accounting = _model_action(state, deps)
        update.update(accounting)
    deps.audit(
        "agent_step",
        {
            "request_id": state["request_id"],
            "step": update["steps"],
            "tool": action.tool,
            "args": action.args,
            "planner": action.planner,
        },
    )
    done = None if action.is_final else _repeat_of_done_call(action, state)
    if action.is_final or done is not None:
        answer = str(action.args.get("answer", "")) if done is None else done["result"]
        return {**update, "draft": answer.strip(), "pending": []}
    call = ToolCall(id=action.call_id, name=action.tool, arguments=action.args)
    messages = [
        *(state.get("messages") or []),
        Message(
            role="assistant", content=json.dumps({"tool": action.tool, "args": action.args}), tool_calls=[call]
        ).model_dump(),
    ]
    return {**update, "messages": messages, "pending": [action.to_call()], "draft": ""}


def _execute(
    state: dict[str, Any],
    deps: GraphDeps,
    call: dict[str, Any],
    approver: str | None = None,
) -> dict[str, Any]:
    """Run one call; return the state update with its result appended for the model."""
    tool = deps.tools.get(call["name"]) if call["name"] in deps.tools else None
    effects = tool is not None and (tool.risk != "read" or tool.needs_approval)
    if effects:  # the step (and approval) that permit the effect reach the disk before it
        audit_durable(deps.audit)
    with span(
        deps.tracer,
        f"keel.tool.{call['name']}",
        KIND.TOOL,
        **{
            SA.TOOL_NAME: call["name"],
            SA.TOOL_PARAMETERS: call["arguments"],
            "keel.approved_by": approver,
        },
    ) as current:
        result = deps.tools.run(call["name"], call["arguments"], deps.tool_context)
        set_attrs(
            current,
            **{SA.OUTPUT_VALUE: result.for_model()[:2000], "keel.ok": result.ok, "keel.attempts": result.attempts},
        )
    entry = {
        "id": call["id"],
        "tool": call["name"],
        "args": call["arguments"],
        "ok": result.ok,
        "result": result.for_model(),
        "attempts": result.attempts,
        "approved_by": approver,
        "planner": call.get("planner", "model"),
    }
    deps.audit("tool_call", {"request_id": state["request_id"], **entry})
    if effects:
        audit_durable(deps.audit)
    update: dict[str, Any] = {
        "tool_log": [*(state.get("tool_log") or []), entry],
        "messages": [
            *(state.get("messages") or []),
            Message(
                role="tool",
                tool_call_id=call["id"],
                content=f"Result of {call['name']}: {result.for_model()}",
            ).model_dump(),
        ],
    }
    if call["name"] == "search_knowledge" and result.ok and isinstance(result.data, list):
        known = {s["id"] for s in state.get("sources") or []}
        update["sources"] = [
            *(state.get("sources") or []),
            *({"uri": "", "page": None, **hit} for hit in result.data if hit["id"] not in known),
        ]
    return update


def run_tools(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    pending = list(state.get("pending") or [])
    update: dict[str, Any] = {}
    while pending:
        if update and cancel_requested():  # keep what ran; the next node stops the run
            break
        call = pending[0]
        tool = deps.tools.get(call["name"]) if call["name"] in deps.tools else None
        if tool is not None and tool.needs_approval:
            approval = deps.approvals.create(
                run_id=state["thread_id"],
                tool=call["name"],
                args=call["arguments"],
                requester=state.get("user_id") or "anonymous",
                ttl_s=deps.settings.tools.approval_ttl_s,
            )
            deps.audit("approval_requested", {"request_id": state["request_id"], **approval.to_dict()})
            return {**update, "pending": pending, "approval": approval.public(), "paused_at": time.time()}
        update.update(_execute({**state, **update}, deps, call))
        pending.pop(0)
    return {**update, "pending": pending, "approval": None}


def await_approval(state: dict[str, Any], deps: GraphDeps) -> dict[str, Any]:
    """Pause for a person. Resumed with the store's decision; only the store can approve."""
    decision = interrupt({"approval": state["approval"]})
    resumed = {
        "clock_start": state["clock_start"] + (time.time() - state.get("paused_at", time.time())),
        "approval": None,
    }
    call = state["pending"][0]
    approval_id = state["approval"]["id"]
    status = decision.get("status") if isinstance(decision, dict) else None
    if status != "approved":
        who = decision.get("by", "a person") if isinstance(decision, dict) else "a person"
        why = "expired before anyone approved it" if status == "expired" else f"was rejected by {who}"
        deps.audit("approval_decided", {"request_id": state["request_id"], "id": approval_id, "status": status})
        return {
            **resumed,
            "pending": [],
            "draft": f"The {call['name']} call {why}; nothing was changed.",
            "error": None if status == "rejected" else {"error": "approval_expired", "id": approval_id},
        }
    try:
        record = deps.approvals.consume(approval_id, tool=call["name"], args=call["arguments"])
    except ApprovalInvalid as exc:
        deps.audit("approval_invalid", {"request_id": state["request_id"], "id": approval_id, "reason": str(exc)})
        return {
            **resumed,
            "pending": [],
            "draft": f"The approval could not be used ({exc.message}); nothing was changed.",
            "error": exc.to_dict(),
        }
    deps.audit(
        "approval_used",
        {"request_id": state["request_id"], "id": approval_id, "by": record.decided_by, "args_hash": record.args_hash},
    )
    update = _execute(state, deps, call, approver=record.decided_by)
    return {**resumed, **update, "pending": state["pending"][1:]}
