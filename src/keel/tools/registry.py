"""Tools the agent may call: typed arguments, a risk level, a timeout and retries.

A tool's arguments are a pydantic model; its JSON Schema (with the tool's name
and description) is what the model sees, and the same model validates what
the model sends back. Whatever goes wrong inside a tool (bad arguments, an
error, a timeout) comes back as a :class:`ToolResult` with ``ok=False``: the
model reads the error and can try again; the run does not crash.

Risk levels: ``read`` looks, ``write`` changes, ``destructive`` cannot be
undone. Every destructive tool, and any tool configured so, waits for a
person's approval before it runs (see :mod:`keel.tools.approvals`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ..errors import InputError, KeelError
from ..knowledge.types import Retriever
from ..models.base import ToolSpec
from .workspace import Workspace

__all__ = ["Risk", "Tool", "ToolContext", "ToolRegistry", "ToolResult", "args_hash"]

Risk = Literal["read", "write", "destructive"]


@dataclass
class ToolContext:
    """What a tool may reach: the workspace folder and the knowledge base."""

    workspace: Workspace
    retriever: Retriever | None = None
    kb: str = "default"


@dataclass
class ToolResult:
    ok: bool
    content: str
    error: str | None = None
    attempts: int = 1
    latency_ms: float = 0.0
    data: Any = None

    def for_model(self) -> str:
        return self.content if self.ok else f"ERROR: {self.error}"


@dataclass
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[[Any, ToolContext], Any]
    risk: Risk = "read"
    #: destructive tools always need approval; this adds it for others
    require_approval: bool = False
    timeout_s: float = 10.0
    retries: int = 1
    #: errors worth another attempt; anything else is the caller's mistake
    retry_on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)

    @property
    def needs_approval(self) -> bool:
        return self.risk == "destructive" or self.require_approval

    def parameters(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("additionalProperties", False)
        return schema

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters())

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(args)'}: {e['msg']}" for e in exc.errors())
            raise InputError(
                f"invalid arguments for {self.name}: {detail}",
                hint=f"call {self.name} with arguments matching its schema",
            ) from None


def args_hash(tool: str, arguments: dict[str, Any]) -> str:
    """The hash an approval binds to: the tool and its exact arguments, canonically encoded."""
    blob = json.dumps({"tool": tool, "args": arguments}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeelError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="keel-tool")

    def register(self, tool: Tool) -> Tool:
        if not tool.name.replace("_", "").isalnum():
            raise InputError(
                f"tool name {tool.name!r} must be letters, digits and underscores",
                hint="rename the tool, e.g. search_orders",
            )
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        if name not in self._tools:
            raise InputError(
                f"unknown tool {name!r} (available: {', '.join(self.names()) or 'none'})",
                hint="call one of the available tools",
            )
        return self._tools[name]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools[n] for n in self.names())

    def specs(self) -> list[ToolSpec]:
        return [t.spec() for t in self]

    def run(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Validate, run with the tool's timeout, retry transient failures; never raise.

        A timeout stops the *wait*, not the tool: Python cannot kill a thread, so a tool that ignores
        time keeps its worker until it returns. Tools that call out should pass their own timeouts too."""
        started = time.perf_counter()
        try:
            tool = self.get(name)
            args = tool.validate(arguments)
        except InputError as exc:
            return ToolResult(False, "", error=str(exc), attempts=0)
        attempt = 0
        while True:
            attempt += 1
            future = self._pool.submit(tool.fn, args, context)
            try:
                value = future.result(timeout=tool.timeout_s)
            except concurrent.futures.TimeoutError:
                error: BaseException = TimeoutError(f"{name} did not finish within {tool.timeout_s:g}s")
            except Exception as exc:  # the model reads the error and decides what to do
                error = exc
            else:
                content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
                return ToolResult(True, content, attempts=attempt, latency_ms=_ms(started), data=value)
            if attempt > tool.retries or not isinstance(error, tool.retry_on):
                return ToolResult(False, "", error=_describe(error), attempts=attempt, latency_ms=_ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
