"""The catalog: documents, chunk texts and the keyword index, in one SQLite file.

It sits beside the vector store and is the record of what is ingested: a
chunk is searchable once its row is committed here, and that commit happens
only after its vectors are stored, so a crash at any point leaves no chunk
without vectors. Vectors left over from an interrupted run are listed in
``pending`` and removed by the next run.

The keyword index is an SQLite FTS5 table over the chunks (BM25 ranking,
Porter stemming). It holds no data of its own: ``rebuild_keyword_index`` remakes it
from the chunk rows, and :meth:`KnowledgeBase.rebuild_catalog` remakes the chunk
rows from the vector store.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from .chunking import Chunk
from .loaders import Document

__all__ = ["Catalog", "DocRow", "where_sql"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kb TEXT NOT NULL, doc_id TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL,
    content_hash TEXT NOT NULL, pages INTEGER NOT NULL, chunks INTEGER NOT NULL, ingested_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (kb, doc_id));
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, kb TEXT NOT NULL, id TEXT NOT NULL, doc_id TEXT NOT NULL, position INTEGER NOT NULL,
    page INTEGER, heading TEXT, text TEXT NOT NULL, indexed TEXT NOT NULL, metadata TEXT NOT NULL,
    UNIQUE (kb, id));
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (kb, doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    indexed, content='chunks', content_rowid='rowid', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, indexed) VALUES (new.rowid, new.indexed); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, indexed) VALUES ('delete', old.rowid, old.indexed); END;
CREATE TABLE IF NOT EXISTS pending (kb TEXT NOT NULL, doc_id TEXT NOT NULL, started_at REAL NOT NULL,
    PRIMARY KEY (kb, doc_id));
"""

# Words too common to rank by; keeping them makes every chunk match and BM25 slow at scale.
_STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "has", "have", "how",
    "i", "if", "in", "into", "is", "it", "its", "of", "on", "or", "so", "than", "that", "the", "their", "then",
    "there", "these", "this", "to", "was", "what", "when", "where", "which", "who", "why", "will", "with",
    "you", "your",
])
_WORD = re.compile(r"\w+", re.UNICODE)
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class DocRow(dict[str, Any]):
    """A document as ``keel kb list`` shows it."""


def _field_sql(key: str, cond: Any, params: list[Any]) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise InputError(f"filter field {key!r} is not a plain name", hint="use letters, digits and _")
    col = f"json_extract(c.metadata, '$.{key}')"
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    parts = []
    for op, value in cond.items():
        if op in ("$in", "$nin"):
            values = list(value)
            marks = ",".join("?" * len(values)) or "NULL"
            parts.append(f"{col} {'NOT IN' if op == '$nin' else 'IN'} ({marks})")
            params.extend(values)
        elif op in _OPS:
            parts.append(f"{col} {_OPS[op]} ?")
            params.append(value)
        else:
            raise InputError(f"unknown filter operator {op!r}", hint=f"use one of {sorted([*_OPS, '$in', '$nin'])}")
    return " AND ".join(parts)


def where_sql(where: dict[str, Any], params: list[Any]) -> str:
    """A Chroma-style metadata filter as SQL over the chunk metadata."""
    parts = []
    for key, cond in where.items():
        if key in ("$and", "$or"):
            inner = [where_sql(sub, params) for sub in cond]
            parts.append("(" + f" {key[1:].upper()} ".join(inner) + ")")
        else:
            parts.append(_field_sql(key, cond, params))
    return "(" + " AND ".join(parts) + ")" if parts else "1"


def fts_query(text: str) -> str | None:
    """Free text as an FTS5 OR-query of its content words, each quoted (no syntax reaches FTS5)."""
    words = [w.lower() for w in _WORD.findall(text)]
    keep = [w for w in words if w not in _STOPWORDS] or words
    unique = list(dict.fromkeys(keep))
    return " OR ".join(f'"{w}"' for w in unique) if unique else None


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- documents --------------------------------------------------------------------------

    def content_hash(self, kb: str, doc_id: str) -> str | None:
        row = self._db.execute("SELECT content_hash FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id)).fetchone()
        return row[0] if row else None

    def chunk_ids(self, kb: str, doc_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM chunks WHERE kb=? AND doc_id=?", (kb, doc_id))}

    def replace_document(self, kb: str, doc: Document, chunks: list[Chunk],
                         metadatas: list[dict[str, Any]], *, version: str) -> None:
        """Swap in a document's chunks in one transaction: searches see the old set or the new one."""
        rows = [(kb, c.id, c.doc_id, c.position, c.page, c.heading, c.text, c.context_text(doc.title),
                 json.dumps(m)) for c, m in zip(chunks, metadatas, strict=True)]
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE kb=? AND doc_id=?", (kb, doc.doc_id))
            db.executemany("INSERT INTO chunks (kb, id, doc_id, position, page, heading, text, indexed, metadata)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (kb, doc.doc_id, doc.uri, doc.title, doc.kind, version, doc.pages, len(chunks),
                        time.time(), json.dumps(doc.metadata)))

    def delete_document(self, kb: str, doc_id: str) -> int:
        with self._tx() as db:
            n = db.execute("DELETE FROM chunks WHERE kb=? AND doc_id=?", (kb, doc_id)).rowcount
            db.execute("DELETE FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id))
        return n

    def find_documents(self, kb: str, ref: str) -> list[str]:
        """Doc ids matching an id, an id prefix, a uri or a path that resolves to a uri."""
        resolved = str(Path(ref).resolve()) if not ref.startswith(("pydoc:", "http")) else ref
        rows = self._db.execute(
            "SELECT doc_id FROM documents WHERE kb=? AND (doc_id=? OR uri=? OR uri=? OR doc_id LIKE ?)",
            (kb, ref, ref, resolved, ref.replace("%", "") + "%")).fetchall()
        return sorted({r[0] for r in rows})

    def documents(self, kb: str) -> list[DocRow]:
        cur = self._db.execute("SELECT doc_id, uri, title, kind, pages, chunks, ingested_at FROM documents"
                               " WHERE kb=? ORDER BY uri", (kb,))
        names = [d[0] for d in cur.description]
        return [DocRow(zip(names, row, strict=True)) for row in cur]

    def kbs(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT kb, COUNT(*), SUM(chunks), SUM(pages) FROM documents GROUP BY kb ORDER BY kb")
        return [{"kb": kb, "documents": d, "chunks": c or 0, "pages": p or 0} for kb, d, c, p in rows]

    # -- interrupted runs -------------------------------------------------------------------

    def mark_pending(self, kb: str, doc_id: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)", (kb, doc_id, time.time()))

    def clear_pending(self, kb: str, doc_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pending WHERE kb=? AND doc_id=?", (kb, doc_id))

    def pending(self, kb: str) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT doc_id FROM pending WHERE kb=?", (kb,))]

    # -- reading ----------------------------------------------------------------------------

    def chunks_by_id(self, kb: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(ids)
        if not ids:
            return {}
        q = ("SELECT c.id, c.doc_id, c.position, c.page, c.heading, c.text, d.title, d.uri, c.metadata"
             " FROM chunks c JOIN documents d ON d.kb=c.kb AND d.doc_id=c.doc_id"
             f" WHERE c.kb=? AND c.id IN ({','.join('?' * len(ids))})")
        out = {}
        for cid, doc_id, pos, page, heading, text, title, uri, meta in self._db.execute(q, [kb, *ids]):
            out[cid] = {"id": cid, "doc_id": doc_id, "position": pos, "page": page, "heading": heading,
                        "text": text, "title": title, "uri": uri, "metadata": json.loads(meta)}
        return out

    def keyword_search(self, kb: str, query: str, n: int,
                       where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; the score is positive, higher is better."""
        match = fts_query(query)
        if match is None:
            return []
        params: list[Any] = [match, kb]
        filt = where_sql(where, params) if where else "1"
        q = ("SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid"
             f" WHERE chunks_fts MATCH ? AND c.kb = ? AND {filt} ORDER BY s LIMIT ?")
        params.append(n)
        with self._lock:
            return [(cid, -score) for cid, score in self._db.execute(q, params)]

    def rebuild_keyword_index(self) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")

    def count_chunks(self, kb: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks WHERE kb=?", (kb,)).fetchone()[0])
