"""Cut each source down to the part that answers the question, before a model reads it.

A 135M-parameter model loses the thread in long prompts, and on two CPU cores
every prompt token costs time. The sentence that shares most content words
with the question, and the ones after it up to ``limit`` characters, carry
the answer; the answer object still lists the whole source.
"""

from __future__ import annotations

from typing import Any

from ..guardrails import relevance, split_sentences

__all__ = ["focus", "focused_sources"]


def focus(question: str, text: str, limit: int = 600) -> str:
    sentences = split_sentences(text)
    if not sentences or len(text) <= limit:
        return " ".join(sentences) if sentences else text
    best = max(range(len(sentences)), key=lambda i: (relevance(question, sentences[i]), -i))
    picked: list[str] = []
    for sentence in sentences[best:]:
        if picked and sum(len(s) + 1 for s in picked) + len(sentence) > limit:
            break
        picked.append(sentence[:limit])
    return " ".join(picked)


def focused_sources(
    question: str, sources: list[dict[str, Any]], *, k: int = 3, limit: int = 600
) -> list[dict[str, Any]]:
    return [{**s, "text": focus(question, s["text"], limit)} for s in sources[:k]]
