"""Labelled examples in, a trained router out, with its held-out accuracy.

The bundled set lives in ``router/data/routes.jsonl`` (``{"text", "label"}``
per line). ``keel router train --labels FILE`` adds the user's own labels and
saves the model under the data directory, where :func:`load_classifier`
finds it next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from .classifier import SoftmaxClassifier
from .features import Featurizer, HashedBagOfWords
from .policy import LABELS

log = logging.getLogger("keel.router")

__all__ = ["TrainReport", "bundled_examples", "load_classifier", "load_examples", "split", "train"]

Example = tuple[str, str]


@dataclass
class TrainReport:
    examples: int
    holdout: int
    holdout_accuracy: float
    per_label: dict[str, int]
    path: str | None = None


def _parse(lines: list[str], source: str) -> list[Example]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = str(row["text"]).strip(), str(row["label"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(
                f'{source}:{n} is not a {{"text": ..., "label": ...}} JSON line',
                hint="write one JSON object per line with text and label",
            ) from None
        if label not in LABELS:
            raise InputError(
                f"{source}:{n}: label {label!r} is not one of {list(LABELS)}",
                hint="label chat (direct answer), kb (answer from the knowledge base) or agent",
            )
        if text:
            out.append((text, label))
    return out


def bundled_examples() -> list[Example]:
    text = resources.files("keel.router").joinpath("data/routes.jsonl").read_text(encoding="utf-8")
    return _parse(text.splitlines(), "routes.jsonl")


def load_examples(path: Path) -> list[Example]:
    if not path.is_file():
        raise InputError(f"label file {path} does not exist", hint="give a JSONL file of {text, label} lines")
    return _parse(path.read_text(encoding="utf-8").splitlines(), str(path))


def split(examples: list[Example], every: int = 5) -> tuple[list[Example], list[Example]]:
    """A deterministic held-out split: every ``every``-th example of each label is held out."""
    train_set, held = [], []
    seen: dict[str, int] = {}
    for text, label in examples:
        seen[label] = seen.get(label, 0) + 1
        (held if seen[label] % every == 0 else train_set).append((text, label))
    return train_set, held


def _fit(examples: list[Example], featurizer: Featurizer) -> SoftmaxClassifier:
    X = featurizer.embed([t for t, _ in examples])
    return SoftmaxClassifier.fit(X, [label for _, label in examples])


def accuracy(model: SoftmaxClassifier, featurizer: Featurizer, examples: list[Example]) -> float:
    if not examples:
        return float("nan")
    probs = model.predict_proba(featurizer.embed([t for t, _ in examples]))
    predicted = [model.labels[i] for i in np.argmax(probs, axis=1)]
    return sum(p == label for p, (_, label) in zip(predicted, examples, strict=True)) / len(examples)


def train(
    examples: list[Example], featurizer: Featurizer | None = None, *, save_to: Path | None = None
) -> tuple[SoftmaxClassifier, TrainReport]:
    """Measure on a held-out split, then fit on everything and (optionally) save."""
    featurizer = featurizer or HashedBagOfWords()
    missing = [label for label in LABELS if not any(lab == label for _, lab in examples)]
    if missing:
        raise InputError(f"no examples labelled {missing}", hint="give at least a few examples of every label")
    train_set, held = split(examples)
    score = accuracy(_fit(train_set, featurizer), featurizer, held)
    model = _fit(examples, featurizer)
    if save_to is not None:
        model.save(save_to)
    counts = {label: sum(1 for _, lab in examples if lab == label) for label in LABELS}
    return model, TrainReport(len(examples), len(held), round(score, 4), counts, str(save_to) if save_to else None)


_fitted: dict[tuple[str, int, str], SoftmaxClassifier] = {}


def _bundled(featurizer: Featurizer, cache_dir: Path | None) -> SoftmaxClassifier:
    """The classifier fitted on the bundled set, fitted once and cached (in memory and on disk),
    keyed by the set's content and the featuriser, so editing either refits it."""
    text = resources.files("keel.router").joinpath("data/routes.jsonl").read_bytes()
    key = (featurizer.name, featurizer.dim, hashlib.sha256(text).hexdigest()[:12])
    if key in _fitted:
        return _fitted[key]
    cached = cache_dir / f"bundled-{key[0]}-{key[1]}-{key[2]}.npz" if cache_dir else None
    model = None
    if cached is not None and cached.is_file():
        with contextlib.suppress(ConfigError):  # a damaged cache is refitted and written again
            model = SoftmaxClassifier.load(cached)
    if model is None:
        model = _fit(bundled_examples(), featurizer)
        if cached is not None:
            with contextlib.suppress(OSError):  # a read-only home: the cache only saves refitting next start
                model.save(cached)
    _fitted[key] = model
    return model


def load_classifier(path: Path | None, featurizer: Featurizer) -> SoftmaxClassifier:
    """The user's trained model if saved at ``path``, else the one fitted on the bundled set
    (cached beside ``path``)."""
    if path is not None and path.is_file():
        model = SoftmaxClassifier.load(path)
        if model.weights.shape[0] == featurizer.dim:
            return model
        log.warning("the router model %s was trained for %d features, not %s's %d: using the bundled "
                    "router; train it again with `keel router train`",
                    path, model.weights.shape[0], featurizer.name, featurizer.dim)
    return _bundled(featurizer, path.parent if path is not None else None)
