"""The agent's next action: planned by a rule, or chosen by the model and always parseable.

A tiny model cannot be trusted to pick tools from free text, so:

1. On the first step, when the router saw a plain need for a tool, a rule
   pulls the arguments out of the question (a file name, an arithmetic
   expression). No model call is spent.
2. Otherwise the model answers with one JSON action constrained to
   :func:`action_schema` (an ``anyOf`` of every tool's arguments plus
   ``final_answer``): llama.cpp turns it into a grammar, so the output always
   parses and always names a real tool. Providers with native tool calls may
   return those instead; both end up as :class:`Action`.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..models.base import ChatResponse
from ..tools import ToolRegistry

__all__ = ["FINAL", "Action", "action_schema", "parse_action", "plan_by_rule", "shortlist"]

FINAL = "final_answer"
_FILENAME = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.[A-Za-z0-9]{1,5})\b")
_EXPRESSION = re.compile(r"[-+(]?\s*\d[\d\s.,]*(?:(?:\*\*|[-+*/%^x×÷])\s*\(?\s*-?\d[\d.,]*\s*\)?\s*)+")


@dataclass
class Action:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    planner: str = "model"
    call_id: str = field(default_factory=lambda: "call_" + secrets.token_hex(6))

    @property
    def is_final(self) -> bool:
        return self.tool == FINAL

    def to_call(self) -> dict[str, Any]:
        return {"id": self.call_id, "name": self.tool, "arguments": self.args, "planner": self.planner}


def action_schema(tools: ToolRegistry, names: set[str] | None = None) -> dict[str, Any]:
    """One JSON object: a tool (of ``names``, default all) and its arguments, or the final answer."""
    options = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "args": t.parameters()},
            "required": ["tool", "args"],
            "additionalProperties": False,
        }
        for t in tools
        if names is None or t.name in names
    ]
    final_args = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 400}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    options.append(
        {
            "type": "object",
            "properties": {"tool": {"const": FINAL}, "args": final_args},
            "required": ["tool", "args"],
            "additionalProperties": False,
        }
    )
    return options[0] if len(options) == 1 else {"type": "object", "anyOf": options}


def shortlist(tools: ToolRegistry, nearest: list[dict[str, Any]], every: list[dict[str, Any]]) -> set[str]:
    """Tools worth offering for this question: those the nearest examples use, plus every tool
    with no example at all (a small model picks better among fewer, and the grammar is smaller)."""
    near = {e["action"]["tool"] for e in nearest}
    known = {e["action"]["tool"] for e in every}
    return {t.name for t in tools if t.name in near or t.name not in known} | {FINAL}


def _expression(question: str) -> str | None:
    match = _EXPRESSION.search(question)
    if not match:
        return None
    expr = match.group(0).strip().rstrip(".,")
    return re.sub(r"(?<=\d)\s*x\s*(?=\d)", "*", expr) if re.search(r"[-+*/%^x×÷]", expr) else None


def plan_by_rule(question: str, tool_hint: str | None, tools: ToolRegistry) -> Action | None:
    """The first call a plain request needs, with arguments taken from its own words."""
    if tool_hint is None or tool_hint not in tools:
        return None
    if tool_hint in ("delete_file", "read_file"):
        names = _FILENAME.findall(question)
        return Action(tool_hint, {"path": names[0]}, planner="rule") if len(names) == 1 else None
    if tool_hint == "list_files":
        return Action("list_files", {"folder": "."}, planner="rule")
    if tool_hint == "calculator":
        expr = _expression(question)
        return Action("calculator", {"expression": expr}, planner="rule") if expr else None
    return None


def parse_action(response: ChatResponse) -> Action:
    """Native tool calls first, then the JSON action; plain text is a final answer."""
    if response.tool_calls:
        call = response.tool_calls[0]
        return Action(call.name, dict(call.arguments), call_id=call.id or "call_" + secrets.token_hex(6))
    text = response.text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return Action(FINAL, {"answer": response.text.strip()})
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return Action(FINAL, {"answer": response.text.strip()})
    args = data.get("args") if isinstance(data.get("args"), dict) else {}
    return Action(data["tool"], args)
