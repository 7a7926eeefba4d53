"""The request graph: input guard, router, fast path, agent loop with approvals, quality guard."""

from .answer import Answer
from .builder import NODES, build_graph
from .deps import AuditHook, GraphDeps, no_audit
from .factory import build_runtime
from .runtime import GraphRuntime
from .testing import FakeRetriever, by_purpose

__all__ = [
    "NODES",
    "Answer",
    "AuditHook",
    "FakeRetriever",
    "GraphDeps",
    "GraphRuntime",
    "build_graph",
    "build_runtime",
    "by_purpose",
    "no_audit",
]
