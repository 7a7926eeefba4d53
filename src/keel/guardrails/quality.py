"""The quality guardrail: is this answer fit to hand over?

:meth:`QualityGuard.check` runs every check (groundedness when there are
sources, the schema when one was asked for, secrets, personal data) and says
what failed. The graph decides what to do with a failure: re-ask once with
the problems, then fall back to :func:`extractive_answer` (the sources' own
sentences, quoted with citations), or refuse. An answer is never reported as
grounded unless the scorer found it so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import GuardrailSettings
from ..structured.schema import OutputSchema, SchemaMismatch
from .grounding import _SENTENCE_END, Grounding, content_words, relevance, score_groundedness, split_sentences
from .leaks import find_pii, find_secrets, new_findings, redact

__all__ = ["Check", "QualityGuard", "QualityReport", "extractive_answer", "is_non_answer", "without_repeats"]

#: (answer, sources, question) -> Grounding; a model-based scorer can replace the lexical one
GroundingScorer = Callable[[str, Sequence[str], str], Grounding]
_NON_ANSWER = re.compile(r"(?i)^\W*(i don'?t know|i do not know|i'?m not sure|i cannot answer|no answer)\b")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "passed": self.passed, "detail": self.detail}
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass
class QualityReport:
    checks: list[Check]
    groundedness: float | None
    problems: list[str] = field(default_factory=list)
    grounding: Grounding | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _echoes(words: set[str], earlier: list[set[str]], overlap: float = 0.75) -> bool:
    """Whether a sentence mostly says again what an earlier one said (Jaccard over content words)."""
    return len(words) >= 3 and any(len(words & e) / len(words | e) >= overlap for e in earlier)


def _repeated_sentences(text: str) -> list[str]:
    """Sentences said (nearly) again: a small model's tell that it lost the thread."""
    earlier: list[set[str]] = []
    repeated = []
    for sentence in split_sentences(text):
        words = content_words(sentence)
        if _echoes(words, earlier) and sentence not in repeated:
            repeated.append(sentence)
        earlier.append(words)
    return repeated


def without_repeats(text: str) -> str:
    """The answer with every sentence that echoes an earlier one dropped: repairs a small model's loop
    for free."""
    earlier: list[set[str]] = []
    kept = []
    for part in _SENTENCE_END.split(text):  # citations kept, unlike split_sentences
        sentence = " ".join(part.split())
        if not sentence:
            continue
        words = content_words(sentence)
        if not _echoes(words, earlier):
            kept.append(sentence)
        earlier.append(words)
    return " ".join(kept)


def is_non_answer(text: str) -> bool:
    """Empty, wordless ("[]", "..."), or a refusal to answer."""
    return not any(ch.isalnum() for ch in text) or bool(_NON_ANSWER.match(text))


class QualityGuard:
    def __init__(self, settings: GuardrailSettings, scorer: GroundingScorer | None = None) -> None:
        self.settings = settings
        self.scorer = scorer or (
            lambda answer, sources, question: score_groundedness(
                answer, sources, threshold=settings.sentence_support, question=question
            )
        )

    def check(
        self, answer: str, *, question: str, sources: Sequence[str], schema: dict[str, Any] | None = None
    ) -> QualityReport:
        checks: list[Check] = []
        problems: list[str] = []
        grounding = None
        if sources:
            grounding = self.scorer(answer, sources, question)
            ok = grounding.score >= self.settings.min_groundedness and not is_non_answer(answer)
            detail = f"{sum(s.supported for s in grounding.sentences)}/{len(grounding.sentences)} sentences supported"
            checks.append(Check("groundedness", ok, detail, grounding.score))
            problems += grounding.problems() if not ok else []
            if not any(ch.isalnum() for ch in answer):
                problems.append("the answer has no words; answer the question from the sources")
            elif is_non_answer(answer):
                problems.append("the answer says it does not know although sources were found")
        repeated = _repeated_sentences(answer)
        checks.append(Check("repetition", not repeated, "; ".join(r[:80] for r in repeated)))
        problems += [f"the answer repeats itself: {r[:80]!r}" for r in repeated]
        if schema is not None:
            checks.append(self._schema(answer, schema, problems))
        for name, findings in (("secrets", find_secrets(answer)), ("pii", find_pii(answer))):
            leaked = new_findings(findings, question)
            checks.append(Check(name, not leaked, ", ".join(f.describe() for f in leaked)))
            problems += [f"the answer must not contain {f.kind}" for f in leaked]
        return QualityReport(checks, grounding.score if grounding else None, problems, grounding)

    @staticmethod
    def _schema(answer: str, schema: dict[str, Any], problems: list[str]) -> Check:
        try:
            OutputSchema.from_json_schema(schema).validate(json.loads(answer))
        except json.JSONDecodeError as exc:
            problems.append(f"the answer is not JSON: {exc}")
            return Check("schema", False, "not JSON")
        except SchemaMismatch as exc:
            problems += exc.errors
            return Check("schema", False, "; ".join(exc.errors))
        return Check("schema", True)


def extractive_answer(question: str, sources: Sequence[dict[str, Any]], *, max_quotes: int = 2) -> str:
    """The sources' own best sentences for the question, quoted with citations: ``[n]`` for the n-th
    source, or the source's ``label`` (a tool's name) when it has one.

    Scores each sentence of each source by its overlap with the question's
    content words; quotes the best sentence of the best sources, redacting any
    secret or personal data.
    """
    scored: list[tuple[float, int, str, str | None]] = []
    for n, source in enumerate(sources, 1):
        # headings and fragments ("The "with" statement") say nothing: quote sentences of 5+ words
        sentences = [x for x in split_sentences(source.get("text", "")) if len(x.split()) >= 5]
        # the best sentence; on a tie the earliest (documents state the point before the details)
        ranked = sorted(range(len(sentences)), key=lambda i: (-relevance(question, sentences[i]), i))
        best = (relevance(question, sentences[ranked[0]]), sentences[ranked[0]]) if sentences else (0.0, "")
        if best[1] and best[0] > 0:
            scored.append((best[0] + float(source.get("score") or 0) * 1e-3, n, best[1], source.get("label")))
    # overlapping chunks often hold the same sentence: quote each sentence once, citing its best source
    distinct: dict[str, tuple[float, int, str, str | None]] = {}
    for entry in sorted(scored, key=lambda t: -t[0]):
        distinct.setdefault(" ".join(entry[2].split()).casefold(), entry)
    quotes = list(distinct.values())[:max_quotes]
    if not quotes:
        return ""
    quotes = [q for q in quotes if q[0] >= quotes[0][0] / 2]  # a much weaker second quote only distracts
    text = " ".join(
        f"\u201c{_trim(q)}\u201d " + (f"({label})" if label else f"[{n}]")
        for _, n, q, label in sorted(quotes, key=lambda t: t[1])
    )
    return redact(f"From the sources: {text}", find_secrets(text) + find_pii(text))


def _trim(sentence: str, limit: int = 400) -> str:
    sentence = " ".join(sentence.split())
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "\u2026"
