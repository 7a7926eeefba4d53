"""Routing rules: the cheap, certain cases decided before any model or classifier.

A rule fires on what a request plainly needs: a tool (files, arithmetic), the
knowledge base named explicitly, or more than one step (long or multi-part).
Each rule returns its reason, which the answer and the audit ledger carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RuleHit", "apply_rules"]

_FILE_WORDS = r"(?:file|files|folder|workspace|directory|[\w-]+\.(?:txt|md|csv|json|ya?ml|log|zip|pdf|py))"
_TOOL_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("delete_file", re.compile(rf"\b(delete|remove|erase|rm|clean up|wipe)\b.*{_FILE_WORDS}", re.I)),
    ("read_file", re.compile(rf"\b(read|open|show|cat|summari[sz]e)\b.*{_FILE_WORDS}", re.I)),
    ("list_files", re.compile(r"\b(list|what|which)\b.*\b(files|folder|workspace)\b", re.I)),
    ("calculator", re.compile(r"\d\s*(?:[-+*/^x×÷%]|\*\*)\s*\(?\s*\d|\b(calculate|compute)\b.*\d", re.I)),
]
_KB_PATTERNS = re.compile(r"\b(knowledge base|the docs|documentation|according to|our (docs|wiki|handbook))\b", re.I)
_MULTI_PART = re.compile(r"\b(then|after that|and then|step by step|compare|first)\b", re.I)


@dataclass(frozen=True)
class RuleHit:
    route: str
    needs_kb: bool
    reason: str
    #: the tool the rule saw a need for, if any
    tool: str | None = None


def apply_rules(question: str, *, kb_named: bool = False, long_words: int = 60) -> RuleHit | None:
    """The first rule that fires, or None to let the classifier decide."""
    for tool, pattern in _TOOL_PATTERNS:
        if pattern.search(question):
            return RuleHit("agent", tool == "search_knowledge", f"rule: needs the {tool} tool", tool)
    words = len(question.split())
    if words > long_words:
        return RuleHit("agent", True, f"rule: long request ({words} words > {long_words})")
    if question.count("?") > 1 or (_MULTI_PART.search(question) and words > 8):
        return RuleHit("agent", True, "rule: multi-part request")
    if kb_named:
        return RuleHit("fast", True, "rule: the caller named a knowledge base")
    if _KB_PATTERNS.search(question):
        return RuleHit("fast", True, "rule: the question names the knowledge base")
    return None
