"""The vector store: Chroma, embedded (``PersistentClient``) or a server (``HttpClient``).

Each knowledge base is one collection (cosine space) holding one record per
embedding window: ``<chunk id>:<window>``, with the chunk's metadata, and the
chunk text on window 0 so the catalog can be rebuilt from the store alone.
We always pass our own vectors; Chroma's default embedding function (which
downloads a model) is never used. Chroma errors are translated here.

The embedded store belongs to one process at a time: :class:`StoreLock` takes
an exclusive, non-blocking file lock on the store folder, so a second keel
process gets :class:`~keel.errors.StoreLocked` at once instead of a hang or a
corrupted index. Several keel processes share a store through server mode.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RetrievalError, StoreLocked

__all__ = ["StoreLock", "VectorStore", "collection_name"]


def collection_name(kb: str, embedder: str) -> str:
    """A Chroma-safe name per (knowledge base, vector space): models never mix."""
    tag = hashlib.sha256(embedder.encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in kb)[:40]
    return f"kb-{safe}-{tag}"


class StoreLock:
    """An exclusive lock on a store folder, shared by every user inside this process."""

    _held: dict[str, tuple[int, int]] = {}  # path -> (fd, users)
    _guard = threading.Lock()

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = str((folder / "keel.lock").resolve())
        self._released = False
        with self._guard:
            if self.path in self._held:
                fd, users = self._held[self.path]
                self._held[self.path] = (fd, users + 1)
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StoreLocked(
                    f"another process (pid {owner}) has the knowledge base at {folder} open",
                    hint="wait for it to finish, or run `chroma run --path <dir>` and set "
                         "knowledge.store: server in keel.yaml so several processes can share it") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._held[self.path] = (fd, 1)

    def release(self) -> None:
        with self._guard:
            if self._released or self.path not in self._held:
                return
            self._released = True
            fd, users = self._held[self.path]
            if users > 1:
                self._held[self.path] = (fd, users - 1)
                return
            del self._held[self.path]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextmanager
def _chroma_errors(action: str) -> Iterator[None]:
    try:
        yield
    except RetrievalError:
        raise
    except Exception as exc:  # chromadb raises many types; none may travel past this module
        raise RetrievalError(f"the vector store failed to {action}: {type(exc).__name__}: {exc}",
                             hint="check knowledge.store in keel.yaml; `keel kb list` shows what is stored") from None


class VectorStore:
    def __init__(self, *, path: Path | None = None, host: str | None = None, port: int = 8000,
                 ssl: bool = False) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        with _chroma_errors("open"):
            if host:
                self._client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
            else:
                assert path is not None
                self._client = chromadb.PersistentClient(path=str(path), settings=settings)
        self._collections: dict[str, Any] = {}

    def _collection(self, name: str) -> Any:
        if name not in self._collections:
            with _chroma_errors("open a collection"):
                self._collections[name] = self._client.get_or_create_collection(
                    name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
        return self._collections[name]

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, metadatas: list[dict[str, Any]],
               documents: list[str | None]) -> None:
        col = self._collection(name)
        with _chroma_errors("store vectors"):
            for i in range(0, len(ids), 2000):
                col.upsert(ids=ids[i:i + 2000], embeddings=vectors[i:i + 2000],
                           metadatas=metadatas[i:i + 2000], documents=documents[i:i + 2000])  # type: ignore[arg-type]

    def ids_for_doc(self, name: str, doc_id: str) -> list[str]:
        with _chroma_errors("list vectors"):
            return list(self._collection(name).get(where={"doc_id": doc_id}, include=[])["ids"])

    def delete(self, name: str, ids: list[str]) -> None:
        col = self._collection(name)
        with _chroma_errors("delete vectors"):
            for i in range(0, len(ids), 2000):
                col.delete(ids=ids[i:i + 2000])

    def query(self, name: str, vector: np.ndarray, n: int,
              where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """(record id, cosine similarity) best first."""
        col = self._collection(name)
        with _chroma_errors("search"):
            res = col.query(query_embeddings=[vector], n_results=n, where=_chroma_where(where),
                            include=["distances"])
        return [(rid, 1.0 - float(d)) for rid, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    def count(self, name: str) -> int:
        with _chroma_errors("count"):
            return int(self._collection(name).count())

    def chunk_records(self, name: str, batch: int = 5000) -> Iterator[tuple[dict[str, Any], str]]:
        """Every window-0 record: (metadata, chunk text), to rebuild the catalog from."""
        col = self._collection(name)
        offset = 0
        while True:
            with _chroma_errors("read records"):
                res = col.get(where={"window": 0}, include=["metadatas", "documents"], limit=batch, offset=offset)
            if not res["ids"]:
                return
            yield from zip(res["metadatas"], res["documents"], strict=True)
            offset += len(res["ids"])


def _chroma_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chroma wants several fields wrapped in ``$and``; keel accepts the flat form too."""
    if not where:
        return None
    if len(where) == 1:
        return where
    return {"$and": [{k: v} for k, v in where.items()]}
