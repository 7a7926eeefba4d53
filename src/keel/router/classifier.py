"""Multinomial logistic regression in numpy: small, deterministic, fast to train.

A few hundred labelled questions train in milliseconds, so keel ships the
labels, not weights, and ``keel router train`` can retrain on a user's own
labels in place. Probabilities come from a softmax; the router treats a low
top probability as "unsure".
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["SoftmaxClassifier"]


@dataclass
class SoftmaxClassifier:
    labels: list[str]
    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(
        cls, X: np.ndarray, y: Sequence[str], *, l2: float = 1e-3, lr: float = 0.5, epochs: int = 300
    ) -> SoftmaxClassifier:
        """Full-batch gradient descent on cross-entropy with L2; deterministic."""
        labels = sorted(set(y))
        index = {label: i for i, label in enumerate(labels)}
        target = np.zeros((len(y), len(labels)), dtype=np.float32)
        target[np.arange(len(y)), [index[v] for v in y]] = 1.0
        W = np.zeros((X.shape[1], len(labels)), dtype=np.float32)
        b = np.zeros(len(labels), dtype=np.float32)
        for _ in range(epochs):
            probs = _softmax(X @ W + b)
            grad = (probs - target) / len(y)
            W -= lr * (X.T @ grad + l2 * W)
            b -= lr * grad.sum(axis=0)
        return cls(labels, W, b)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(X @ self.weights + self.bias)

    def save(self, path: Path) -> None:
        """Write whole or not at all: a reader (another replica, the next start) never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as fh:
                np.savez(fh, labels=np.array(self.labels), weights=self.weights, bias=self.bias)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> SoftmaxClassifier:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls([str(v) for v in data["labels"]], data["weights"], data["bias"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(
                f"the router model {path} cannot be read: {exc}",
                hint="train it again with `keel router train`, or delete the file to use the bundled router",
            ) from None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
