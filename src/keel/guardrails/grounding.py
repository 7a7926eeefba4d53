"""Groundedness, deterministic and offline: is each answer sentence in the sources?

For every sentence of the answer: its content words (stop words dropped,
light stemming) are looked up in each source; the best source's share is the
sentence's *support* (words the question used are neutral). Numbers and names (capitalised words, identifiers like
``__init__``) must appear in some source, whatever the share. A sentence is
supported when its support reaches the threshold and nothing specific is
missing. Groundedness is the share of supported sentences. The scorer is a
plain callable, so a model-based one can replace it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Grounding",
    "SentenceSupport",
    "content_words",
    "relevance",
    "score_groundedness",
    "split_sentences",
]

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "do",
        "does",
        "did",
        "done",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "not",
        "no",
        "yes",
        "so",
        "such",
        "than",
        "too",
        "very",
        "just",
        "also",
        "only",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "him",
        "her",
        "us",
        "them",
        "my",
        "your",
        "his",
        "our",
        "their",
        "into",
        "about",
        "over",
        "under",
        "up",
        "down",
        "out",
        "more",
        "most",
        "some",
        "any",
        "each",
        "all",
        "both",
        "few",
        "other",
        "own",
        "same",
        "again",
        "further",
        "once",
        "between",
        "through",
        "during",
        "before",
        "after",
        "above",
        "below",
        "off",
        "per",
        "via",
        "using",
        "use",
        "used",
        "your",
        "yours",
        "i'm",
        "it's",
        "don't",
        "doesn't",
        "isn't",
        "aren't",
    ]
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9`])|\n\s*\n")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = [w.casefold() for w in _WORD.findall(text)]
    return set(zip(words, words[1:], strict=False))


def relevance(question: str, sentence: str) -> float:
    """How well a sentence answers a question: shared content words plus shared word pairs (so "the with
    statement" counts "with", a stop word in English and a keyword in Python), scaled down for text
    that is mostly symbols (grammar rules, code)."""
    shared = len(content_words(question) & content_words(sentence)) + len(_bigrams(question) & _bigrams(sentence))
    letters = sum(ch.isalpha() or ch.isspace() for ch in sentence) / max(1, len(sentence))
    return shared * (1.0 if letters >= 0.85 else 0.25)


def content_words(text: str) -> set[str]:
    return {_stem(w.casefold()) for w in _WORD.findall(text) if w.casefold() not in _STOP and len(w) > 1}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _names(sentence: str) -> set[str]:
    words = _WORD.findall(sentence)
    names = {w for i, w in enumerate(words) if i > 0 and w[:1].isupper() and w.casefold() not in _STOP}
    names |= {w for w in words if "_" in w}
    return names


def split_sentences(text: str) -> list[str]:
    """Sentences, with hard-wrapped lines joined back (documentation is often wrapped)."""
    parts = _SENTENCE_END.split(_CITATION.sub("", text))
    return [" ".join(p.split()) for p in parts if p.strip()]


@dataclass
class SentenceSupport:
    text: str
    support: float
    supported: bool
    best_source: int | None
    missing_numbers: list[str] = field(default_factory=list)
    missing_names: list[str] = field(default_factory=list)


@dataclass
class Grounding:
    score: float
    sentences: list[SentenceSupport]

    def problems(self) -> list[str]:
        out = []
        for s in self.sentences:
            if s.supported:
                continue
            detail = [f"support {s.support:.2f}"]
            if s.missing_numbers:
                detail.append(f"numbers not in the sources: {', '.join(s.missing_numbers)}")
            if s.missing_names:
                detail.append(f"names not in the sources: {', '.join(s.missing_names)}")
            out.append(f"not supported by the sources ({'; '.join(detail)}): {s.text[:160]!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_groundedness(answer: str, sources: Sequence[str], *, threshold: float = 0.6, question: str = "") -> Grounding:
    """Score each sentence; words the question itself used are neutral (restating it claims nothing)."""
    asked = content_words(question)
    source_words = [content_words(s) for s in sources]
    all_text = "\n".join(sources)
    all_numbers, all_lower = _numbers(all_text), all_text.casefold()
    judged: list[SentenceSupport] = []
    for sentence in split_sentences(answer):
        words = content_words(sentence)
        numbers, names = _numbers(sentence), _names(sentence)
        if len(words) < 2 and not numbers and not names:
            continue  # "Yes." carries no claim of its own
        claims = words - asked
        shares = [len(claims & sw) / len(claims) if claims else 1.0 for sw in source_words] or [0.0]
        best = max(range(len(shares)), key=shares.__getitem__)
        missing_numbers = sorted(numbers - all_numbers)
        missing_names = sorted(n for n in names if n.casefold() not in all_lower)
        ok = shares[best] >= threshold and not missing_numbers and not missing_names
        judged.append(
            SentenceSupport(
                sentence, round(shares[best], 3), ok, best if sources else None, missing_numbers, missing_names
            )
        )
    # no sentence makes a claim: nothing is unsupported (a bare "I don't know" is caught by the caller)
    score = sum(s.supported for s in judged) / len(judged) if judged else 1.0
    return Grounding(round(score, 3), judged)
