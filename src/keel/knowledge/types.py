"""What retrieval returns, and the interface the graph retrieves through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Retriever", "SearchHit"]


@dataclass
class SearchHit:
    """One retrieved chunk, as the answer object's ``sources`` shows it."""

    id: str
    doc_id: str
    title: str
    uri: str
    text: str
    score: float
    #: 1-based page as a PDF viewer counts, or None
    page: int | None = None
    position: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_source(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "uri": self.uri, "page": self.page,
                "score": round(self.score, 4), "text": self.text}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever(Protocol):
    def search(self, query: str, *, kb: str = "default", k: int = 5,
               where: dict[str, Any] | None = None) -> list[SearchHit]: ...
