"""Draw the configured graph as Mermaid: the seed's sketch, from the running configuration.

Nodes and edges come from the compiled LangGraph (so the drawing cannot drift
from the code); the labels on conditional edges say when each path is taken;
the tools subgraph lists the enabled tools with their risk, marking the ones
that wait for a person.
"""

from __future__ import annotations

from typing import Any

from ..tools import ToolRegistry

__all__ = ["EDGE_LABELS", "to_mermaid"]

#: why each conditional edge is taken, keyed by (source, target)
EDGE_LABELS: dict[tuple[str, str], str] = {
    ("input_guard", "blocked"): "blocked",
    ("input_guard", "router"): "ok",
    ("router", "retrieve"): "needs knowledge base",
    ("router", "fast_answer"): "fast: chat",
    ("router", "agent_reason"): "agent: tools",
    ("retrieve", "fast_answer"): "fast",
    ("retrieve", "agent_reason"): "agent",
    ("agent_reason", "run_tools"): "tool call",
    ("agent_reason", "quality"): "final answer",
    ("run_tools", "await_approval"): "risky tool",
    ("run_tools", "agent_reason"): "observe",
    ("await_approval", "run_tools"): "approved, more calls",
    ("await_approval", "agent_reason"): "approved",
    ("await_approval", "quality"): "rejected / expired",
    ("quality", "respond"): "pass / fallback / refuse",
    ("quality", "fast_answer"): "re-ask once",
    ("quality", "agent_reason"): "re-ask once",
}
_SHAPES = {"router": "{{{{{}}}}}", "await_approval": "[/{}/]", "quality": "{{{{{}}}}}", "input_guard": "{{{{{}}}}}"}
_TITLES = {
    "input_guard": "input guard",
    "router": "router",
    "retrieve": "retrieve (knowledge base)",
    "fast_answer": "fast path: cheap model",
    "agent_reason": "agent: reason",
    "run_tools": "tool calls",
    "await_approval": "human approval (interrupt)",
    "quality": "quality guardrail",
    "respond": "response",
    "blocked": "blocked answer",
}


#: "end" is a Mermaid keyword, so LangGraph's start and end get ids of their own
_IDS = {"__start__": "query", "__end__": "answer"}


def _node(name: str, settings_note: dict[str, str]) -> str:
    if name in _IDS:
        return f"    {_IDS[name]}([{_IDS[name]}])"
    title = _TITLES.get(name, name) + settings_note.get(name, "")
    shape = _SHAPES.get(name, "[{}]")
    return f"    {name}" + shape.format(f'"{title}"')


def to_mermaid(graph: Any, tools: ToolRegistry, notes: dict[str, str] | None = None) -> str:
    """Mermaid flowchart of a compiled graph's ``get_graph()`` plus the tool registry."""
    drawn = graph.get_graph()
    lines = ["flowchart TD"]
    lines += [_node(n, notes or {}) for n in drawn.nodes]
    for edge in drawn.edges:
        source, target = _IDS.get(edge.source, edge.source), _IDS.get(edge.target, edge.target)
        label = EDGE_LABELS.get((edge.source, edge.target))
        arrow = f" -.->|{label}| " if edge.conditional and label else (" -.-> " if edge.conditional else " --> ")
        lines.append(f"    {source}{arrow}{target}")
    lines.append('    subgraph tools["tools"]')
    for tool in tools:
        mark = ", needs approval" if tool.needs_approval else ""
        lines.append(f'        tool_{tool.name}["{tool.name} ({tool.risk}{mark})"]')
    lines.append("    end")
    lines.append("    run_tools -.- tools")
    approval = [t.name for t in tools if t.needs_approval]
    if approval:
        lines.append("    " + " & ".join(f"tool_{n}" for n in approval) + " -.- await_approval")
    return "\n".join(lines)
