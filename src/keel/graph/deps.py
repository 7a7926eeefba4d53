"""Everything the nodes use, injected once when the graph is built.

Nothing here is a global: the gateway, retriever, tools, approval store,
router, guards, prompts, tracer and audit hook are passed in, so a test (or a
user's app) swaps any of them for a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Tracer

from ..config import Settings
from ..guardrails import QualityGuard
from ..knowledge.types import Retriever
from ..models.gateway import Gateway
from ..prompts import CuratedExamples, FewShotSelector, PromptLibrary
from ..router import Router
from ..tools import ApprovalStore, ToolContext, ToolRegistry
from .tracing import default_tracer

__all__ = ["AuditHook", "GraphDeps", "audit_durable", "no_audit"]

AuditHook = Callable[[str, dict[str, Any]], None]


def no_audit(event: str, data: dict[str, Any]) -> None:
    """The default audit hook: records nothing."""


def audit_durable(hook: AuditHook) -> None:
    """Have every decision the hook recorded so far on disk (its ``flush()``, if it queues).

    The graph calls it before a tool with effects runs, so the decision that led to the
    effect is durable before the effect, and again after, for the tool call's record.
    """
    flush = getattr(hook, "flush", None)
    if flush is not None:
        flush()


@dataclass
class GraphDeps:
    settings: Settings
    gateway: Gateway
    router: Router
    tools: ToolRegistry
    tool_context: ToolContext
    approvals: ApprovalStore
    guard: QualityGuard
    prompts: PromptLibrary
    examples: FewShotSelector
    retriever: Retriever | None = None
    audit: AuditHook = no_audit
    tracer: Tracer = field(default_factory=default_tracer)
    #: accepted feedback examples for the fast path's answer prompts (None: none)
    curated: CuratedExamples | None = None
    #: retrieved passages per question
    k: int = 4
    #: roles of the gateway's model chains
    fast_role: str = "fast"
    agent_role: str = "chat"
    judge_role: str = "judge"
