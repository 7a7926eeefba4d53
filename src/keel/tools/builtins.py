"""The built-in tools: knowledge search, safe arithmetic, and workspace files."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..config import ToolSettings
from ..errors import ConfigError, InputError, RetrievalError
from .calculator import evaluate
from .registry import Tool, ToolContext, ToolRegistry

__all__ = ["BUILTIN_TOOLS", "build_registry"]


class SearchArgs(BaseModel):
    query: str = Field(description="what to look for in the knowledge base")
    k: int = Field(4, ge=1, le=10, description="how many passages to return")


class CalculatorArgs(BaseModel):
    expression: str = Field(description="an arithmetic expression, e.g. (17 + 5) * 3")


class ListArgs(BaseModel):
    folder: str = Field(".", description="a folder inside the workspace")


class PathArgs(BaseModel):
    path: str = Field(description="a file path relative to the workspace, e.g. notes.txt")


def _search(args: SearchArgs, ctx: ToolContext) -> list[dict[str, Any]]:
    if ctx.retriever is None:
        raise RetrievalError("no knowledge base is configured", hint="run `keel ingest` first")
    hits = ctx.retriever.search(args.query, kb=ctx.kb, k=args.k)
    return [{"id": h.id, "title": h.title, "score": round(h.score, 4), "text": h.text[:600]} for h in hits]


def _calculate(args: CalculatorArgs, ctx: ToolContext) -> str:
    return f"{args.expression} = {format_number(evaluate(args.expression))}"


def format_number(value: float | int) -> str:
    """Integers in full (1234 * 5678 = 7006652, not 7.00665e+06); floats to 12 significant digits,
    which hides binary noise (0.1 + 0.2 = 0.3) and keeps whole results whole."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def _list_files(args: ListArgs, ctx: ToolContext) -> list[str]:
    folder = ctx.workspace.ensure() if args.folder in ("", ".") else ctx.workspace.resolve(args.folder)
    if not folder.is_dir():
        raise InputError(f"{args.folder!r} is not a folder in the workspace", hint="call list_files with '.'")
    root = ctx.workspace.ensure()
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in folder.iterdir())


def _read_file(args: PathArgs, ctx: ToolContext) -> str:
    path = ctx.workspace.resolve(args.path)
    if not path.is_file():
        raise InputError(f"{args.path!r} is not a file in the workspace", hint="call list_files to see the files")
    data = path.read_bytes()[:20_000]
    return data.decode("utf-8", errors="replace")


def _delete_file(args: PathArgs, ctx: ToolContext) -> str:
    path = ctx.workspace.resolve(args.path)
    if not path.is_file():
        raise InputError(f"{args.path!r} is not a file in the workspace", hint="call list_files to see the files")
    path.unlink()
    return f"deleted {args.path}"


BUILTIN_TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool("search_knowledge", "Search the knowledge base for passages about a query.", SearchArgs, _search),
        Tool("calculator", "Evaluate an arithmetic expression exactly.", CalculatorArgs, _calculate),
        Tool("list_files", "List the files in a workspace folder.", ListArgs, _list_files),
        Tool("read_file", "Read a text file from the workspace.", PathArgs, _read_file),
        Tool(
            "delete_file",
            "Delete a file from the workspace. Cannot be undone.",
            PathArgs,
            _delete_file,
            risk="destructive",
        ),
    ]
}


def build_registry(settings: ToolSettings, extra: list[Tool] | None = None) -> ToolRegistry:
    """The enabled built-ins plus ``extra``, with settings' timeouts, retries and approvals applied."""
    unknown = [n for n in settings.enabled if n not in BUILTIN_TOOLS]
    if unknown:
        raise ConfigError(f"tools.enabled names unknown tools {unknown}", hint=f"choose from {sorted(BUILTIN_TOOLS)}")
    registry = ToolRegistry()
    for tool in [*(BUILTIN_TOOLS[n] for n in settings.enabled), *(extra or [])]:
        registry.register(_configured(tool, settings))
    return registry


def _configured(tool: Tool, settings: ToolSettings) -> Tool:
    override = settings.per_tool.get(tool.name)
    configured = Tool(**{**tool.__dict__})
    configured.timeout_s = settings.timeout_s if tool.name in BUILTIN_TOOLS else tool.timeout_s
    configured.retries = settings.retries if tool.name in BUILTIN_TOOLS else tool.retries
    if tool.name in settings.require_approval:
        configured.require_approval = True
    if override is not None:
        configured.risk = override.risk or configured.risk
        if override.require_approval is not None:
            configured.require_approval = override.require_approval
        configured.timeout_s = override.timeout_s or configured.timeout_s
        configured.retries = configured.retries if override.retries is None else override.retries
    return configured
