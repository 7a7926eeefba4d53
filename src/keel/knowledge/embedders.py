"""Embedders: text in, vectors out, cached by content so nothing is embedded twice.

An embedder returns, per text, a matrix with one row per window: the local
model reads at most 256 tokens, so a longer chunk gets several vectors (the
store keeps each as a child of the chunk) instead of being cut short. A
provider with a long context returns one row.

    Embedder (protocol)
    ├── LocalEmbedder      all-MiniLM-L6-v2 in numpy, offline (the default)
    ├── ProviderEmbedder   an OpenAI-compatible /embeddings endpoint (keel.yaml)
    └── CachedEmbedder     wraps either; SQLite cache keyed by sha256(model, text)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, MissingAPIKey, RetrievalError

__all__ = ["CachedEmbedder", "Embedder", "LocalEmbedder", "ProviderEmbedder"]

Matrix = NDArray[np.float32]


class Embedder(Protocol):
    #: identifies the vector space; vectors from different names never mix
    name: str
    dim: int

    def embed_windows(self, texts: list[str]) -> list[Matrix]:
        """Per text, a (windows, dim) matrix of unit vectors."""
        ...

    def embed_query(self, text: str) -> Matrix:
        """One unit vector for a search query."""
        ...

    def count_tokens(self, text: str) -> int: ...


class LocalEmbedder:
    """all-MiniLM-L6-v2, run in numpy from the packaged weights."""

    name = "local:all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 16, threads: int = 1) -> None:
        from .minilm import MiniLM

        self._model = MiniLM(threads=threads)
        self._batch = batch_size

    def embed_windows(self, texts: list[str]) -> list[Matrix]:
        return self._model.embed_windows(texts, batch_size=self._batch)

    def embed_query(self, text: str) -> Matrix:
        return self._model.embed([text])[0]

    def count_tokens(self, text: str) -> int:
        return self._model.count_tokens(text)

    def tokenize_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token; the chunker cuts on these."""
        return self._model.tokenizer.encode(text, add_special_tokens=False).offsets


class ProviderEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM, Ollama, llama.cpp server)."""

    def __init__(self, model: str, base_url: str, api_key_env: str | None = None, dim: int = 0,
                 batch_size: int = 64, timeout_s: float = 60.0) -> None:
        if not base_url:
            raise ConfigError("knowledge.embeddings.base_url is required for provider embeddings",
                              hint="e.g. base_url: https://api.openai.com/v1")
        self.name = f"provider:{base_url.rstrip('/')}#{model}"
        self.model = model
        self.dim = dim
        self._url = base_url.rstrip("/") + "/embeddings"
        self._key_env = api_key_env
        self._batch = batch_size
        self._timeout = timeout_s

    def _headers(self) -> dict[str, str]:
        if not self._key_env:
            return {}
        key = os.environ.get(self._key_env)
        if not key:
            raise MissingAPIKey(self._key_env, self.model)
        return {"Authorization": f"Bearer {key}"}

    def _call(self, texts: list[str]) -> list[list[float]]:
        import httpx

        try:
            response = httpx.post(self._url, json={"model": self.model, "input": texts},
                                  headers=self._headers(), timeout=self._timeout)
            response.raise_for_status()
            rows = sorted(response.json()["data"], key=lambda r: r["index"])
            return [r["embedding"] for r in rows]
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            raise RetrievalError(f"the embeddings endpoint {self._url} failed: {exc}",
                                 hint="check knowledge.embeddings in keel.yaml, or use the local model") from None

    def embed_windows(self, texts: list[str]) -> list[Matrix]:
        out: list[Matrix] = []
        for i in range(0, len(texts), self._batch):
            for row in self._call(texts[i:i + self._batch]):
                v = np.asarray(row, dtype=np.float32)
                out.append((v / max(float(np.linalg.norm(v)), 1e-12))[None, :])
        if out:
            self.dim = out[0].shape[1]
        return out

    def embed_query(self, text: str) -> Matrix:
        return self.embed_windows([text])[0][0]

    def count_tokens(self, text: str) -> int:
        # documented estimate for remote models: about 4 characters per token
        return max(1, len(text) // 4)


class CachedEmbedder:
    """Any embedder, with vectors cached in SQLite by sha256 of (model name, text)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, rows INTEGER, dim INTEGER,"
                         " data BLOB)")
        self._lock = threading.Lock()
        #: texts actually sent to the model since this object was built
        self.computed = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.name}\0{text}".encode()).hexdigest()

    def embed_windows(self, texts: list[str]) -> list[Matrix]:
        keys = [self._key(t) for t in texts]
        found = self._lookup(sorted(set(keys)))
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        if missing:
            fresh = self.inner.embed_windows([t for _, t in missing])
            self.computed += len(missing)
            self._store([(k, m) for (k, _), m in zip(missing, fresh, strict=True)])
            found.update({k: m for (k, _), m in zip(missing, fresh, strict=True)})
        return [found[k] for k in keys]

    def _lookup(self, keys: list[str]) -> dict[str, Matrix]:
        out: dict[str, Matrix] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                q = f"SELECT key, rows, dim, data FROM vectors WHERE key IN ({','.join('?' * len(part))})"
                for key, rows, dim, data in self._db.execute(q, part):
                    out[key] = np.frombuffer(data, dtype=np.float32).reshape(rows, dim)
        return out

    def _store(self, items: list[tuple[str, Matrix]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                                 [(k, m.shape[0], m.shape[1], m.astype(np.float32).tobytes()) for k, m in items])

    def embed_query(self, text: str) -> Matrix:
        return self.inner.embed_query(text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self._db.close()
