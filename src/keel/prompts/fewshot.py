"""Few-shot examples chosen per query: the ones most similar to the question.

A small model copies the shape of its examples, so the examples should look
like the question at hand. Examples live in ``prompts/examples/*.jsonl``;
similarity is cosine over the router's featuriser (swappable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..router.features import Featurizer, HashedBagOfWords

__all__ = ["FewShotSelector", "load_examples"]


def load_examples(name: str) -> list[dict[str, Any]]:
    ref = resources.files("keel.prompts").joinpath(f"examples/{name}.jsonl")
    if not ref.is_file():
        raise ConfigError(f"no few-shot example set named {name!r}", hint="add it under keel/prompts/examples/")
    return [json.loads(line) for line in ref.read_text(encoding="utf-8").splitlines() if line.strip()]


class FewShotSelector:
    def __init__(
        self, examples: list[dict[str, Any]], *, key: str = "question", featurizer: Featurizer | None = None
    ) -> None:
        self.examples = examples
        self.featurizer = featurizer or HashedBagOfWords()
        self._matrix = self.featurizer.embed([str(e[key]) for e in examples]) if examples else None

    def select(
        self,
        query: str,
        k: int = 3,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        min_similarity: float | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` most similar examples (of those ``where`` accepts, and at least
        ``min_similarity`` cosine to the query), most similar last, closest to the question in the prompt."""
        if self._matrix is None or k <= 0:
            return []
        sims = self._matrix @ self.featurizer.embed([query])[0]
        order = [int(i) for i in np.argsort(-sims, kind="stable")]
        if min_similarity is not None:
            order = [i for i in order if sims[i] >= min_similarity]
        best = [i for i in order if where is None or where(self.examples[i])][:k]
        return [self.examples[i] for i in reversed(best)]
