"""The routing policy: rules, then the learned classifier, then a judge model.

Each stage is cheaper and more certain than the next, and runs only when the
one before declined: rules fire on plain needs; the classifier decides when
its top probability clears ``judge_below``; otherwise the cheap model judges
(with constrained decoding, so its verdict always parses). The decision
carries the stage, the reason and every score, for the answer and the audit.

Labels: ``chat`` (fast path, no retrieval), ``kb`` (fast path with
retrieval), ``agent`` (the agent loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import RouterSettings
from ..errors import BudgetExceeded, Cancelled, LimitExceeded
from .classifier import SoftmaxClassifier
from .features import Featurizer
from .rules import apply_rules

__all__ = ["LABELS", "RouteDecision", "Router"]

LABELS = ("agent", "chat", "kb")
#: (question) -> (label, reason); raises to let the classifier's best guess stand
Judge = Callable[[str], tuple[str, str]]


@dataclass
class RouteDecision:
    route: str
    needs_kb: bool
    reason: str
    stage: str
    label: str
    scores: dict[str, float] = field(default_factory=dict)
    tool_hint: str | None = None
    overhead_us: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _from_label(label: str) -> tuple[str, bool]:
    return ("agent", True) if label == "agent" else ("fast", label == "kb")


class Router:
    def __init__(
        self,
        classifier: SoftmaxClassifier,
        featurizer: Featurizer,
        settings: RouterSettings,
        *,
        judge: Judge | None = None,
    ) -> None:
        self.classifier = classifier
        self.featurizer = featurizer
        self.settings = settings
        self.judge = judge if settings.judge else None

    def classify(self, question: str) -> dict[str, float]:
        probs = self.classifier.predict_proba(self.featurizer.embed([question]))[0]
        return {label: round(float(p), 4) for label, p in zip(self.classifier.labels, probs, strict=True)}

    def decide(self, question: str, *, kb_named: bool = False, judge: Judge | None = None) -> RouteDecision:
        """Route one question; ``judge`` (if given) replaces the router's own for this call."""
        started = time.perf_counter()
        decision = self._decide(question, kb_named, judge or self.judge)
        decision.overhead_us = (time.perf_counter() - started) * 1e6
        return decision

    def _decide(self, question: str, kb_named: bool, judge: Judge | None) -> RouteDecision:
        hit = apply_rules(question, kb_named=kb_named, long_words=self.settings.long_question_words)
        if hit is not None:
            label = "agent" if hit.route == "agent" else ("kb" if hit.needs_kb else "chat")
            return RouteDecision(hit.route, hit.needs_kb, hit.reason, "rule", label, {}, hit.tool)
        scores = self.classify(question)
        label, p = max(scores.items(), key=lambda kv: kv[1])
        if p >= self.settings.judge_below or judge is None or not self.settings.judge:
            route, needs_kb = _from_label(label)
            return RouteDecision(route, needs_kb, f"classifier: {label} (p={p:.2f})", "classifier", label, scores)
        return self._ask_judge(judge, question, label, p, scores)

    @staticmethod
    def _ask_judge(judge: Judge, question: str, label: str, p: float, scores: dict[str, float]) -> RouteDecision:
        try:
            judged, why = judge(question)
        except (LimitExceeded, BudgetExceeded, Cancelled):
            raise
        except Exception as exc:  # a failing judge must not fail the request: keep the classifier's guess
            route, needs_kb = _from_label(label)
            return RouteDecision(
                route, needs_kb, f"classifier: {label} (p={p:.2f}); judge failed: {exc}", "classifier", label, scores
            )
        if judged not in LABELS:
            judged = label
        route, needs_kb = _from_label(judged)
        reason = f"judge: {judged} ({why}); classifier unsure: {label} p={p:.2f}"
        return RouteDecision(route, needs_kb, reason, "judge", judged, scores)
