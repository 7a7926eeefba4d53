"""The graph of DESIGN.md §1, wired from small nodes.

    input_guard ─► router ─┬─► (retrieve) ─► fast_answer ─────────────────────┐
                 (blocked) │                                                  │
                     │     └─► (retrieve) ─► agent_reason ⇄ run_tools         │
                     │                          ▲   └─► await_approval        │
                     │                          └────────────┘                ▼
                     └──────────────────────────► respond ◄── quality ◄───────┘
                                                    (re-ask ─► the drafting node)

The router is a conditional edge; so is every loop. Edges are labelled so the
drawn graph (``keel graph --mermaid``) says why each path is taken.

Every node but ``await_approval`` first checks the run's cancel token (see
:mod:`keel._cancel`): a cancelled run starts no further node. ``await_approval``
always runs, because resuming it carries out a decision a person recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, StateGraph

from .._cancel import check_cancelled
from .deps import GraphDeps
from .nodes_agent import agent_reason, await_approval, run_tools
from .nodes_answer import blocked_response, fast_answer, quality, respond
from .nodes_front import input_guard, retrieve, route
from .state import GraphState
from .tracing import KIND, mark_error

__all__ = ["NODES", "build_graph"]

NODES: dict[str, Callable[[dict[str, Any], GraphDeps], dict[str, Any]]] = {
    "input_guard": input_guard,
    "blocked": blocked_response,
    "router": route,
    "retrieve": retrieve,
    "fast_answer": fast_answer,
    "agent_reason": agent_reason,
    "run_tools": run_tools,
    "await_approval": await_approval,
    "quality": quality,
    "respond": respond,
}


#: nodes that open no span of their own (the others open a guard, router or retriever span)
_SPANNED = {
    "fast_answer": KIND.CHAIN,
    "agent_reason": KIND.AGENT,
    "run_tools": KIND.CHAIN,
    "await_approval": KIND.CHAIN,
    "respond": KIND.CHAIN,
    "blocked": KIND.GUARDRAIL,
}


#: nodes a cancelled run still runs (see the module's docstring)
_UNCANCELLABLE = {"await_approval"}

Node = Callable[[dict[str, Any]], dict[str, Any]]


def _cancellable(node: Node) -> Node:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        check_cancelled()
        return node(state)

    return run


def _spanned(name: str, node: Node, deps: GraphDeps) -> Any:
    """One span per node execution; a pause for approval is marked as such, not as an error."""
    check = name not in _UNCANCELLABLE

    def run(state: dict[str, Any]) -> dict[str, Any]:
        if check:
            check_cancelled()
        with deps.tracer.start_as_current_span(
            f"keel.node.{name}",
            attributes={"openinference.span.kind": _SPANNED[name].value},
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            try:
                return node(state)
            except GraphInterrupt:
                current.set_attribute("keel.paused_for_approval", True)
                raise
            except Exception as exc:
                current.record_exception(exc)
                mark_error(current, str(exc))
                raise

    return run


def after_input(state: dict[str, Any]) -> str:
    return "blocked" if state.get("blocked") else "router"


def after_router(state: dict[str, Any]) -> str:
    if state.get("needs_kb"):
        return "retrieve"
    return "agent_reason" if state.get("route") == "agent" else "fast_answer"


def after_retrieve(state: dict[str, Any]) -> str:
    return "agent_reason" if state.get("route") == "agent" else "fast_answer"


def after_reason(state: dict[str, Any]) -> str:
    return "run_tools" if state.get("pending") else "quality"


def after_tools(state: dict[str, Any]) -> str:
    return "await_approval" if state.get("approval") else "agent_reason"


def after_approval(state: dict[str, Any]) -> str:
    if state.get("draft"):
        return "quality"
    return "run_tools" if state.get("pending") else "agent_reason"


def after_quality(state: dict[str, Any]) -> str:
    if state.get("guardrail"):
        return "respond"
    return "agent_reason" if state.get("producer") == "agent" else "fast_answer"


def build_graph(deps: GraphDeps) -> StateGraph:
    """The uncompiled graph; the runtime compiles it with a checkpointer."""
    graph = StateGraph(GraphState)
    for name, fn in NODES.items():
        node: Node = functools.partial(fn, deps=deps)
        if name in _SPANNED:
            node = _spanned(name, node, deps)
        elif name not in _UNCANCELLABLE:
            node = _cancellable(node)
        graph.add_node(name, node)
    graph.add_edge(START, "input_guard")
    graph.add_conditional_edges("input_guard", after_input, {"blocked": "blocked", "router": "router"})
    graph.add_conditional_edges(
        "router", after_router, {"retrieve": "retrieve", "fast_answer": "fast_answer", "agent_reason": "agent_reason"}
    )
    graph.add_conditional_edges(
        "retrieve", after_retrieve, {"fast_answer": "fast_answer", "agent_reason": "agent_reason"}
    )
    graph.add_edge("fast_answer", "quality")
    graph.add_conditional_edges("agent_reason", after_reason, {"run_tools": "run_tools", "quality": "quality"})
    graph.add_conditional_edges(
        "run_tools", after_tools, {"await_approval": "await_approval", "agent_reason": "agent_reason"}
    )
    graph.add_conditional_edges(
        "await_approval",
        after_approval,
        {"quality": "quality", "run_tools": "run_tools", "agent_reason": "agent_reason"},
    )
    graph.add_conditional_edges(
        "quality", after_quality, {"respond": "respond", "fast_answer": "fast_answer", "agent_reason": "agent_reason"}
    )
    graph.add_edge("blocked", "respond")
    graph.add_edge("respond", END)
    return graph
