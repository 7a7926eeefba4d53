"""Ingest: documents in, chunks and vectors stored, safely under interruption.

Per document, in this order:

1. skip it if the catalog already holds the same content (idempotent);
2. mark it pending, chunk it, embed the chunks (cached by content);
3. upsert its vectors (new ids; the old ones still serve searches);
4. swap its chunks in the catalog in one transaction (now searchable);
5. delete its vectors that no chunk references any more; clear pending.

A kill between any two steps leaves every catalogued chunk with its vectors.
The next run first finishes step 5 for whatever is still pending, then ingests
what changed. A file keel cannot read is reported and skipped; the rest go on.

Steps 2 to 5 hold the catalog's lock on the document (``document_lock``; across
replicas with the PostgreSQL catalog): a second writer of the same document waits,
then finds it stored, and recovery skips a pending document whose writer is still
at work, so it never deletes vectors that are about to be catalogued.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .catalog import CatalogStore
from .chunking import Chunk, chunk_document
from .embedders import Embedder
from .loaders import SUFFIXES, Document, file_identity, iter_files, load_file
from .vectors import VectorStore

__all__ = ["FileError", "IngestReport", "Ingestor", "Unchanged", "load_paths"]

#: bump when loading or chunking changes what a file turns into: every document is re-ingested once
#: (chunks whose text did not change come from the embedding cache)
PIPELINE_VERSION = 2

#: called after each file: (files done, files in total, what was just done)
Progress = Callable[[int, int, str], None]


@dataclass
class FileError:
    path: str
    message: str
    hint: str | None = None


@dataclass
class IngestReport:
    kb: str
    documents: int = 0  # new or changed, now stored
    unchanged: int = 0  # already stored with the same content
    pages: int = 0
    chunks: int = 0
    embedded: int = 0  # chunks sent to the model (the rest came from the cache)
    seconds: float = 0.0
    failed: list[FileError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3), "ok": self.ok}


@dataclass
class Unchanged:
    """A file whose bytes are already stored: not even parsed again."""

    path: str


Item = Document | FileError | Unchanged


def load_paths(paths: Iterable[Path], max_bytes: int,
               is_current: Callable[[str, str], bool] | None = None) -> Iterator[Item]:
    """Each file under ``paths`` as a Document, Unchanged, or a FileError saying why it was skipped."""
    for root in paths:
        if not root.exists():
            yield FileError(str(root), "no such file or folder", "check the path")
            continue
        for path in iter_files(root):
            try:
                if is_current and path.suffix.lower() in SUFFIXES and path.stat().st_size <= max_bytes \
                        and is_current(*file_identity(path)):
                    yield Unchanged(str(path))
                    continue
                yield load_file(path, max_bytes=max_bytes)
            except InputError as exc:
                yield FileError(str(path), exc.message, exc.hint)
            except OSError as exc:
                yield FileError(str(path), f"{path}: cannot read: {exc.strerror}", "check its permissions")


class Ingestor:
    def __init__(self, catalog: CatalogStore, vectors: VectorStore, embedder: Embedder, collection: str, kb: str,
                 *, chunk_tokens: int, chunk_overlap: int) -> None:
        self.catalog, self.vectors, self.embedder = catalog, vectors, embedder
        self.collection, self.kb = collection, kb
        self.size, self.overlap = chunk_tokens, chunk_overlap

    def recover(self) -> int:
        """Finish what an interrupted run left: drop vectors of pending docs that no chunk references.

        A pending document whose writer is still at work (it holds the document's lock) is left to it.
        """
        done = 0
        for doc_id in self.catalog.pending(self.kb):
            with self.catalog.document_lock(self.kb, doc_id, wait=False) as mine:
                if mine:
                    self._drop_stale_vectors(doc_id)
                    self.catalog.clear_pending(self.kb, doc_id)
                    done += 1
        return done

    def is_current(self, doc_id: str, content_hash: str) -> bool:
        """Whether the catalog holds exactly this content, processed the way it would be now."""
        return self.catalog.content_hash(self.kb, doc_id) == self._version(content_hash)

    def run(self, items: Iterable[Item], total: int, progress: Progress | None = None,
            report: IngestReport | None = None) -> IngestReport:
        report = report or IngestReport(self.kb)
        start = time.perf_counter()
        self.recover()
        for done, item in enumerate(items, 1):
            if isinstance(item, FileError):
                report.failed.append(item)
                label = f"failed {Path(item.path).name}"
            elif isinstance(item, Unchanged):
                report.unchanged += 1
                label = f"unchanged {Path(item.path).name}"
            else:
                label = self._one(item, report)
            if progress:
                progress(done, total, label)
        report.seconds += time.perf_counter() - start
        return report

    def _one(self, doc: Document, report: IngestReport) -> str:
        version = self._version(doc.content_hash)
        if self.catalog.content_hash(self.kb, doc.doc_id) != version:
            with self.catalog.document_lock(self.kb, doc.doc_id):
                if self.catalog.content_hash(self.kb, doc.doc_id) != version:  # not stored by a writer we waited for
                    return self._store(doc, version, report)
        report.unchanged += 1
        return f"unchanged {doc.title}"

    def _store(self, doc: Document, version: str, report: IngestReport) -> str:
        chunks = chunk_document(doc, size=self.size, overlap=self.overlap, count=self.embedder.count_tokens)
        self.catalog.mark_pending(self.kb, doc.doc_id)
        metadatas = [self._metadata(doc, c) for c in chunks]
        before = getattr(self.embedder, "computed", 0)
        matrices = self.embedder.embed_windows([c.context_text(doc.title) for c in chunks])
        report.embedded += getattr(self.embedder, "computed", 0) - before
        self._upsert(chunks, metadatas, matrices)
        self.catalog.replace_document(self.kb, doc, chunks, metadatas, version=version)
        self._drop_stale_vectors(doc.doc_id)
        self.catalog.clear_pending(self.kb, doc.doc_id)
        report.documents += 1
        report.pages += doc.pages
        report.chunks += len(chunks)
        return f"{len(chunks)} chunks from {doc.title}"

    def _version(self, content_hash: str) -> str:
        """Content plus how it is processed: a new model, chunk size or pipeline version re-ingests."""
        key = f"{content_hash}\0{self.embedder.name}\0{self.size}\0{self.overlap}\0{PIPELINE_VERSION}"
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def _metadata(doc: Document, chunk: Chunk) -> dict[str, Any]:
        meta: dict[str, Any] = {**doc.metadata, "doc_id": doc.doc_id, "chunk_id": chunk.id, "title": doc.title,
                                "uri": doc.uri, "kind": doc.kind, "position": chunk.position}
        if chunk.page is not None:
            meta["page"] = chunk.page
        if chunk.heading:
            meta["heading"] = chunk.heading
        return meta

    def _upsert(self, chunks: list[Chunk], metadatas: list[dict[str, Any]], matrices: list[np.ndarray]) -> None:
        ids, rows, metas, texts = [], [], [], []
        for chunk, meta, matrix in zip(chunks, metadatas, matrices, strict=True):
            for w, vector in enumerate(matrix):
                ids.append(f"{chunk.id}:{w}")
                rows.append(vector)
                metas.append({**meta, "window": w})
                texts.append(chunk.text if w == 0 else None)
        if ids:
            self.vectors.upsert(self.collection, ids, np.asarray(rows, dtype=np.float32), metas, texts)

    def _drop_stale_vectors(self, doc_id: str) -> None:
        keep = self.catalog.chunk_ids(self.kb, doc_id)
        stale = [rid for rid in self.vectors.ids_for_doc(self.collection, doc_id) if rid.split(":")[0] not in keep]
        if stale:
            self.vectors.delete(self.collection, stale)
