"""Build the runtime from settings: the defaults a user gets with no code at all.

Everything can be passed in instead (retriever, audit hook, tracer, extra
tools, checkpointer, approval store), which is how App, the server and tests
inject their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.trace import Tracer

from ..config import Settings
from ..guardrails import QualityGuard
from ..knowledge.types import Retriever, SearchHit
from ..models.gateway import Gateway
from ..prompts import FewShotSelector, PromptLibrary, load_examples
from ..router import HashedBagOfWords, Router, load_classifier
from ..tools import ApprovalStore, Tool, ToolContext, Workspace, build_registry
from .deps import AuditHook, GraphDeps, no_audit
from .runtime import GraphRuntime
from .tracing import default_tracer

__all__ = ["SearchFunctionRetriever", "build_runtime", "router_model_path", "sqlite_checkpointer"]


class SearchFunctionRetriever:
    """Adapts a ``search(query, kb=, k=)`` function (such as ``App.search``) to the Retriever protocol."""

    def __init__(self, search: Callable[..., list[SearchHit]]) -> None:
        self._search = search

    def search(
        self, query: str, *, kb: str = "default", k: int = 5, where: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        return self._search(query, kb=kb, k=k)


def router_model_path(settings: Settings) -> Path:
    return settings.data_dir / "router" / "model.npz"


def sqlite_checkpointer(path: Path) -> Any:
    """LangGraph's SQLite saver on one shared connection (the saver serialises access itself)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn)


def build_router(settings: Settings) -> Router:
    featurizer = HashedBagOfWords()
    return Router(load_classifier(router_model_path(settings), featurizer), featurizer, settings.router)


def build_runtime(
    settings: Settings,
    gateway: Gateway,
    *,
    retriever: Retriever | None = None,
    audit: AuditHook = no_audit,
    tracer: Tracer | None = None,
    extra_tools: list[Tool] | None = None,
    checkpointer: Any = None,
    approvals: ApprovalStore | None = None,
    guard: QualityGuard | None = None,
    kb: str = "default",
) -> GraphRuntime:
    tools = build_registry(settings.tools, extra_tools)
    deps = GraphDeps(
        settings=settings,
        gateway=gateway,
        router=build_router(settings),
        tools=tools,
        tool_context=ToolContext(Workspace(settings.workspace), retriever, kb),
        approvals=approvals or ApprovalStore.sqlite(settings.data_dir / "approvals.sqlite3"),
        guard=guard or QualityGuard(settings.guardrails),
        prompts=PromptLibrary(settings.data_dir / "prompts"),
        examples=FewShotSelector(load_examples("agent")),
        retriever=retriever,
        audit=audit,
        tracer=tracer or default_tracer(),
    )
    if "judge" not in gateway.chains:
        deps.judge_role = "fast"
    return GraphRuntime(deps, checkpointer or sqlite_checkpointer(settings.data_dir / "checkpoints.sqlite3"))
