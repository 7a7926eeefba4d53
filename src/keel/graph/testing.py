"""Fakes for testing graphs (shipped, so users test their own apps the same way).

- :class:`FakeRetriever`: keyword search over a list of passages, scored by
  shared words; deterministic, no store, no embedder.
- :func:`by_purpose`: a ``FunctionProvider`` body that answers each model call
  by its purpose (``answer``, ``agent_step``, ``route_judge``), from scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..guardrails import content_words
from ..knowledge.types import SearchHit
from ..models.base import ChatRequest

__all__ = ["FakeRetriever", "by_purpose"]


class FakeRetriever:
    def __init__(self, passages: Iterable[dict[str, Any]], *, kb: str = "default") -> None:
        self.kb = kb
        self.passages = [dict(p) for p in passages]
        self.calls: list[str] = []

    def search(
        self, query: str, *, kb: str = "default", k: int = 5, where: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        self.calls.append(query)
        if kb != self.kb:
            return []
        wanted = content_words(query)
        scored = []
        for n, p in enumerate(self.passages):
            overlap = len(wanted & content_words(f"{p.get('title', '')} {p['text']}"))
            scored.append((overlap / max(1, len(wanted)), n, p))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [
            SearchHit(
                id=p.get("id", f"p{n}"),
                doc_id=p.get("doc_id", f"doc{n}"),
                title=p.get("title", ""),
                uri=p.get("uri", ""),
                text=p["text"],
                score=round(score, 4),
            )
            for score, n, p in scored[:k]
        ]


Reply = Any


def by_purpose(
    scripts: dict[str, list[Reply] | Callable[[ChatRequest], Reply]], *, repeat_last: bool = True
) -> Callable[[ChatRequest], Reply]:
    """Answer each call from the script for its ``metadata['purpose']``, in order."""
    positions: dict[str, int] = {}

    def answer(request: ChatRequest) -> Reply:
        purpose = request.metadata.get("purpose", "")
        script = scripts.get(purpose)
        if script is None:
            raise AssertionError(f"no scripted reply for a {purpose!r} call")
        if callable(script):
            return script(request)
        i = positions.get(purpose, 0)
        if i >= len(script) and not (repeat_last and script):
            raise AssertionError(f"the {purpose!r} script ran out after {len(script)} replies")
        positions[purpose] = i + 1
        return script[min(i, len(script) - 1)]

    return answer
