"""Answers people rated up and a curator accepted, shown as examples in the answer prompts.

This closes the feedback loop: a thumbs-up puts a question and its answer in the
curation queue (``keel curation``); once accepted, the fast path's answer
prompts show it to the model whenever a new question is like it. The accepted
set is re-read at most every ``refresh_s`` seconds, so an acceptance reaches a
running server (and every replica sharing the database) without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .fewshot import FewShotSelector

__all__ = ["CuratedExamples"]

log = logging.getLogger("keel.prompts")


class CuratedExamples:
    """Accepted examples (``{"id", "question", "answer"}``) loaded by ``load``, chosen per question."""

    def __init__(
        self,
        load: Callable[[], list[dict[str, Any]]],
        *,
        k: int = 2,
        min_similarity: float = 0.3,
        refresh_s: float = 30.0,
        max_chars: int = 1200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.k = k
        self.min_similarity = min_similarity
        self.refresh_s = refresh_s
        self.max_chars = max_chars
        self._clock = clock
        self._selector = FewShotSelector([])
        self._due = float("-inf")
        self._lock = threading.Lock()
        self._failing = False

    def select(self, question: str) -> list[dict[str, Any]]:
        """Up to ``k`` accepted examples like ``question``, most similar last; none if none is close."""
        if self.k <= 0:
            return []
        if self._clock() >= self._due:
            self._refresh()
        return self._selector.select(question, self.k, min_similarity=self.min_similarity)

    def _refresh(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another request is re-reading them: use the set we have
        try:
            now = self._clock()
            if now < self._due:
                return
            self._due = now + self.refresh_s
            try:
                examples = self._load()
            except Exception as exc:  # answers go on with the examples last read
                if not self._failing:
                    log.warning("curated examples could not be read (%s); keeping the %d last read",
                                exc, len(self._selector.examples))
                self._failing = True
                return
            self._failing = False
            # a long answer would crowd the sources out of a small model's context: not an example
            examples = [e for e in examples if len(e["question"]) + len(e["answer"]) <= self.max_chars]
            if examples != self._selector.examples:
                self._selector = FewShotSelector(examples)
        finally:
            self._lock.release()
