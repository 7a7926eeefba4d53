"""Text -> vector for the learned router, with no model to download.

:class:`HashedBagOfWords` hashes words, word pairs and character 4-grams into a
fixed-size L2-normalised vector (CRC32, stable across processes, unlike
``hash()``). Any object with ``dim`` and ``embed(texts) -> ndarray`` can
replace it, e.g. the knowledge base's sentence embedder.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["Featurizer", "HashedBagOfWords", "tokenize"]

_WORD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


class Featurizer(Protocol):
    dim: int
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashedBagOfWords:
    name = "hashed-bow"

    def __init__(self, dim: int = 4096) -> None:
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        words = tokenize(text)
        feats = [f"w:{w}" for w in words]
        feats += [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        joined = f" {' '.join(words)} "
        feats += [f"c:{joined[i : i + 4]}" for i in range(max(0, len(joined) - 3))]
        feats.append(f"len:{min(len(words) // 8, 6)}")
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                h = zlib.crc32(feat.encode())
                out[row, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out
