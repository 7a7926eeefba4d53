"""Tools: typed, risk-rated, time-limited; destructive ones wait for a person."""

from .approvals import Approval, ApprovalInvalid, ApprovalStore
from .builtins import BUILTIN_TOOLS, build_registry
from .calculator import evaluate
from .registry import Risk, Tool, ToolContext, ToolRegistry, ToolResult, args_hash
from .workspace import Workspace

__all__ = [
    "BUILTIN_TOOLS",
    "Approval",
    "ApprovalInvalid",
    "ApprovalStore",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "ToolResult",
    "Workspace",
    "args_hash",
    "build_registry",
    "evaluate",
]
