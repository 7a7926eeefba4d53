"""``KnowledgeBase``: ingest, search, list and delete, over named knowledge bases.

One object per data directory. It owns the catalog (documents, chunk texts,
keyword index: a SQLite file under the data directory, or PostgreSQL with
``knowledge.catalog_url``), the vector store (Chroma) and the embedder, and
implements the :class:`~keel.knowledge.types.Retriever` protocol the graph
uses. Search is hybrid by default: the vector and keyword rankings are fused
with reciprocal rank fusion; ``mode="vector"`` or ``"keyword"`` uses one side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from ..config import KnowledgeSettings
from ..errors import InputError, NotFound
from .catalog import CatalogStore, DocRow, open_catalog
from .chunking import Chunk
from .embedders import CachedEmbedder, Embedder, LocalEmbedder, ProviderEmbedder
from .fusion import dedupe_windows, rrf
from .ingest import FileError, Ingestor, IngestReport, Progress, load_paths
from .loaders import Document, iter_files
from .types import SearchHit
from .vectors import StoreLock, VectorStore, collection_name

__all__ = ["KnowledgeBase", "SearchMode", "build_embedder"]

SearchMode = Literal["hybrid", "vector", "keyword"]


def build_embedder(settings: KnowledgeSettings) -> Embedder:
    e = settings.embeddings
    if e.provider == "openai":
        return ProviderEmbedder(e.model, e.base_url or "", e.api_key_env, batch_size=e.batch_size)
    return LocalEmbedder(batch_size=e.batch_size, threads=e.threads)


class KnowledgeBase:
    """Every knowledge base under one data directory (``<home>/kb``)."""

    def __init__(self, settings: KnowledgeSettings, data_dir: Path, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.folder = data_dir / "kb"
        self._embedder = embedder
        self._lock: StoreLock | None = None
        if settings.store == "embedded":
            self._lock = StoreLock(self.folder)  # raises StoreLocked at once if another process has it
        try:
            self.catalog: CatalogStore = open_catalog(settings.catalog_url, self.folder)
            if settings.store == "server":
                self.vectors = VectorStore(host=settings.server_host, port=settings.server_port,
                                           ssl=settings.server_ssl)
            else:
                self.vectors = VectorStore(path=self.folder / "chroma")
        except BaseException:
            self.close()
            raise
        self._cache_path = self.folder / "embeddings.sqlite3"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-keyword")

    @property
    def embedder(self) -> Embedder:
        """Built on first use: listing or deleting documents loads no model."""
        if self._embedder is None:
            self._embedder = CachedEmbedder(build_embedder(self.settings), self._cache_path)
        return self._embedder

    def _name(self, kb: str | None) -> str:
        name = kb or self.settings.default_kb
        if not name.strip() or len(name) > 64:
            raise InputError(f"knowledge base name {name!r} must be 1 to 64 characters", hint="e.g. --kb handbook")
        return name

    def _collection(self, kb: str) -> str:
        return collection_name(kb, self.embedder.name)

    def _ingestor(self, kb: str) -> Ingestor:
        return Ingestor(self.catalog, self.vectors, self.embedder, self._collection(kb), kb,
                        chunk_tokens=self.settings.chunk_tokens, chunk_overlap=self.settings.chunk_overlap)

    # -- writing ------------------------------------------------------------------------

    def ingest(self, paths: Sequence[str | Path], *, kb: str | None = None,
               progress: Progress | None = None) -> IngestReport:
        """Ingest files and folders; unreadable files are reported in ``failed``, the rest stored."""
        name = self._name(kb)
        roots = [Path(p).expanduser() for p in paths]
        total = sum(1 for r in roots for _ in (iter_files(r) if r.exists() else [r]))
        ingestor = self._ingestor(name)
        items = load_paths(roots, int(self.settings.max_file_mb * 1e6), ingestor.is_current)
        return ingestor.run(items, total, progress)

    def ingest_documents(self, docs: Iterable[Document | FileError], *, kb: str | None = None,
                         total: int = 0, progress: Progress | None = None) -> IngestReport:
        """Ingest documents already in memory (the demo corpus, text from an API)."""
        return self._ingestor(self._name(kb)).run(docs, total, progress)

    def delete_doc(self, ref: str, *, kb: str | None = None) -> list[str]:
        """Delete documents by id, id prefix, uri or path; returns the deleted ids."""
        name = self._name(kb)
        ids = self.catalog.find_documents(name, ref)
        if not ids:
            raise NotFound(f"no document {ref!r} in knowledge base {name!r}",
                             hint=f"`keel kb list --kb {name}` shows the documents and their ids")
        collection = self._collection(name)
        for doc_id in ids:
            with self.catalog.document_lock(name, doc_id):  # an ingest of it, on any replica, goes first
                self.catalog.mark_pending(name, doc_id)
                self.catalog.delete_document(name, doc_id)  # unsearchable first, then the vectors go
                self.vectors.delete(collection, self.vectors.ids_for_doc(collection, doc_id))
                self.catalog.clear_pending(name, doc_id)
        return ids

    def rebuild_catalog(self, kb: str | None = None) -> int:
        """Remake a knowledge base's catalog (documents, chunk texts, keyword index) from the vector store.

        For a lost or damaged catalog file: the vector store keeps each chunk's text
        and metadata on its first window. Returns the number of documents restored;
        their next ingest re-checks them (vectors come from the embedding cache).
        """
        name = self._name(kb)
        by_doc: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for meta, text in self.vectors.chunk_records(self._collection(name)):
            by_doc.setdefault(str(meta["doc_id"]), []).append((meta, text))
        for doc_id, records in by_doc.items():
            records.sort(key=lambda r: int(r[0]["position"]))
            first = records[0][0]
            skip = {"doc_id", "chunk_id", "title", "uri", "kind", "position", "page", "heading", "window"}
            doc = Document(str(first["uri"]), str(first["title"]), [], "", str(first["kind"]),
                           pages=max((int(m.get("page") or 0) for m, _ in records), default=0),
                           metadata={k: v for k, v in first.items() if k not in skip})
            chunks = [Chunk(str(m["chunk_id"]), doc_id, int(m["position"]), text, m.get("page"), m.get("heading"), 0)
                      for m, text in records]
            metas = [{k: v for k, v in m.items() if k != "window"} for m, _ in records]
            self.catalog.replace_document(name, doc, chunks, metas, version="restored")
        return len(by_doc)

    def rebuild_keyword_index(self) -> None:
        """Remake the keyword index from the stored chunks (e.g. after copying the files by hand)."""
        self.catalog.rebuild_keyword_index()

    # -- reading ------------------------------------------------------------------------

    def list_kbs(self) -> list[dict[str, Any]]:
        return self.catalog.kbs()

    def documents(self, kb: str | None = None) -> list[DocRow]:
        return self.catalog.documents(self._name(kb))

    def search(self, query: str, *, kb: str | None = None, k: int = 5, where: dict[str, Any] | None = None,
               mode: SearchMode = "hybrid") -> list[SearchHit]:
        """The ``k`` best chunks for ``query``, best first, each with title, uri, page and score.

        ``score``: in hybrid mode the fused RRF score scaled so that first place in
        both rankings is 1.0; in vector mode the cosine similarity; in keyword mode BM25.
        ``metadata`` holds each side's rank and score and the chunk's section heading.
        """
        if not query.strip():
            raise InputError("the search query is empty", hint="e.g. keel search \"how do I reset my password\"")
        if k < 1:
            raise InputError(f"k must be at least 1 (got {k})")
        name = self._name(kb)
        n = max(self.settings.candidates, k)
        if mode == "hybrid":  # both sides at once: the catalog's database, numpy and Chroma release the GIL
            pending = self._pool.submit(self.catalog.keyword_search, name, query, n, where)
            vector = self._vector_side(query, name, n, where)
            keyword = pending.result()
        else:
            vector = self._vector_side(query, name, n, where) if mode == "vector" else []
            keyword = self.catalog.keyword_search(name, query, n, where) if mode == "keyword" else []
        if mode == "vector":
            ranked = vector
        elif mode == "keyword":
            ranked = keyword
        else:
            weights = [self.settings.vector_weight, self.settings.keyword_weight]
            best = sum(w / (self.settings.rrf_k + 1) for w in weights) or 1.0
            fused = rrf([[c for c, _ in vector], [c for c, _ in keyword]], k=self.settings.rrf_k, weights=weights)
            ranked = [(c, s / best) for c, s in fused]
        return self._hits(name, ranked, k, vector, keyword)

    def _vector_side(self, query: str, kb: str, n: int, where: dict[str, Any] | None) -> list[tuple[str, float]]:
        collection = self._collection(kb)
        if self.vectors.count(collection) == 0:
            return []
        windows = self.vectors.query(collection, self.embedder.embed_query(query), n * 2, where)
        return dedupe_windows(windows)[:n]

    def _hits(self, kb: str, ranked: list[tuple[str, float]], k: int, vector: list[tuple[str, float]],
              keyword: list[tuple[str, float]]) -> list[SearchHit]:
        sides = {"vector": {c: (r, s) for r, (c, s) in enumerate(vector, 1)},
                 "keyword": {c: (r, s) for r, (c, s) in enumerate(keyword, 1)}}
        # rows missing from the catalog are vectors of an interrupted ingest: never shown
        rows = self.catalog.chunks_by_id(kb, [c for c, _ in ranked[: k * 3]])
        hits = []
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None:
                continue
            meta = {**row["metadata"], "heading": row["heading"]}
            for side, table in sides.items():
                if chunk_id in table:
                    meta[f"{side}_rank"], meta[f"{side}_score"] = table[chunk_id][0], round(table[chunk_id][1], 4)
            hits.append(SearchHit(id=chunk_id, doc_id=row["doc_id"], title=row["title"], uri=row["uri"],
                                  text=row["text"], score=float(score), page=row["page"], position=row["position"],
                                  metadata=meta))
            if len(hits) == k:
                break
        return hits

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        for thing in (getattr(self, "catalog", None), self._embedder):
            close = getattr(thing, "close", None)
            if close:
                close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
