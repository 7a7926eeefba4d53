"""The catalog: documents, chunk texts and the keyword index, in one SQLite file.

It sits beside the vector store and is the record of what is ingested: a
chunk is searchable once its row is committed here, and that commit happens
only after its vectors are stored, so a crash at any point leaves no chunk
without vectors. Vectors left over from an interrupted run are listed in
``pending`` and removed by the next run.

The keyword index is one SQLite FTS5 table per knowledge base over its chunk
rows (BM25 ranking, Porter stemming), so a small knowledge base is not slowed
by a big one beside it. It holds no text of its own: ``rebuild_keyword_index``
remakes it from the chunk rows.

At 100k chunks, an OR-query over common words makes FTS5 score most of the
corpus. So in a knowledge base of ``PRUNE_FROM_CHUNKS`` or more, words in more
than ``COMMON_SHARE`` of its chunks (low IDF: they add little to BM25) are left
out of the query, keeping at least the two rarest. bench/bench_query.py and
bench/bench_retrieval.py measure the latency gained and the quality cost.

:class:`CatalogStore` is what the knowledge base and the ingest pipeline call;
:class:`Catalog` is this SQLite file, and ``keel.knowledge.catalog_pg`` the same
catalog in PostgreSQL, shared by API replicas (``knowledge.catalog_url``, see
:func:`catalog_url` and :func:`open_catalog`).
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConfigError, InputError
from .chunking import Chunk
from .loaders import Document

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Catalog", "CatalogStore", "DocRow", "catalog_url", "filter_sql", "keep_informative", "open_catalog",
           "where_sql"]

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS kbs (kb TEXT PRIMARY KEY, n INTEGER NOT NULL UNIQUE, chunks INTEGER NOT NULL DEFAULT 0);
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
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
#: words in more than this share of a knowledge base's chunks are dropped from keyword queries
COMMON_SHARE = 0.1
#: below this many chunks every query word is kept: FTS5 is fast enough there without pruning
PRUNE_FROM_CHUNKS = 5000
_TOKENIZE = "porter unicode61"
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class DocRow(dict[str, Any]):
    """A document as ``keel kb list`` shows it."""


#: a metadata key -> the SQL expression of its value in the chunk row ``c``
FieldSql = Callable[[str], str]
#: a value -> its placeholder in the statement (the binder records the value)
Bind = Callable[[Any], str]


def _field_sql(key: str, cond: Any, field: FieldSql, bind: Bind) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise InputError(f"filter field {key!r} is not a plain name", hint="use letters, digits and _")
    col = field(key)
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    parts = []
    for op, value in cond.items():
        if op in ("$in", "$nin"):
            marks = ",".join(bind(v) for v in value) or "NULL"
            parts.append(f"{col} {'NOT IN' if op == '$nin' else 'IN'} ({marks})")
        elif op in _OPS:
            parts.append(f"{col} {_OPS[op]} {bind(value)}")
        else:
            raise InputError(f"unknown filter operator {op!r}", hint=f"use one of {sorted([*_OPS, '$in', '$nin'])}")
    return " AND ".join(parts)


def filter_sql(where: dict[str, Any], field: FieldSql, bind: Bind, true: str = "1") -> str:
    """A Chroma-style metadata filter as SQL, for any database: ``field`` and ``bind`` speak its dialect."""
    parts = []
    for key, cond in where.items():
        if key in ("$and", "$or"):
            inner = [filter_sql(sub, field, bind, true) for sub in cond]
            parts.append("(" + f" {key[1:].upper()} ".join(inner) + ")")
        else:
            parts.append(_field_sql(key, cond, field, bind))
    return "(" + " AND ".join(parts) + ")" if parts else true


def where_sql(where: dict[str, Any], params: list[Any]) -> str:
    """A Chroma-style metadata filter as SQLite SQL over the chunk metadata (values appended to ``params``)."""

    def bind(value: Any) -> str:
        params.append(value)
        return "?"

    return filter_sql(where, lambda key: f"json_extract(c.metadata, '$.{key}')", bind)


def keep_informative(words: list[str], total: int, doc_freq: Callable[[list[str]], dict[str, int]]) -> list[str]:
    """The query words worth ranking by in a knowledge base of ``total`` chunks (see COMMON_SHARE).

    ``doc_freq`` gives each word's number of chunks; it is asked only when pruning applies.
    """
    if len(words) <= 2 or total < PRUNE_FROM_CHUNKS:
        return words
    df = doc_freq(words)
    present = sorted((w for w in words if df.get(w, 0) > 0), key=lambda w: df[w])
    return [w for i, w in enumerate(present) if i < 2 or df[w] <= COMMON_SHARE * total]


class CatalogStore(Protocol):
    """What the knowledge base and the ingest pipeline need from a catalog (SQLite or PostgreSQL)."""

    def content_hash(self, kb: str, doc_id: str) -> str | None: ...
    def chunk_ids(self, kb: str, doc_id: str) -> set[str]: ...
    def replace_document(self, kb: str, doc: Document, chunks: list[Chunk], metadatas: list[dict[str, Any]],
                         *, version: str) -> None: ...
    def delete_document(self, kb: str, doc_id: str) -> int: ...
    def document_lock(self, kb: str, doc_id: str, *, wait: bool = True) -> AbstractContextManager[bool]: ...
    def find_documents(self, kb: str, ref: str) -> list[str]: ...
    def documents(self, kb: str) -> list[DocRow]: ...
    def kbs(self) -> list[dict[str, Any]]: ...
    def mark_pending(self, kb: str, doc_id: str) -> None: ...
    def clear_pending(self, kb: str, doc_id: str) -> None: ...
    def pending(self, kb: str) -> list[str]: ...
    def chunks_by_id(self, kb: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    def keyword_search(self, kb: str, query: str, n: int,
                       where: dict[str, Any] | None = None) -> list[tuple[str, float]]: ...
    def rebuild_keyword_index(self) -> None: ...
    def count_chunks(self, kb: str) -> int: ...
    def close(self) -> None: ...


def _backend(url: str, setting: str) -> Any:
    """``url`` parsed, if it is a SQLite or PostgreSQL URL; else ConfigError naming ``setting``."""
    import sqlalchemy as sa

    forms = "postgresql+psycopg://user@host/db or sqlite:///path/catalog.sqlite3"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"{setting} {url!r} is not a database URL", hint=f"use {forms}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{setting} uses {parsed.get_backend_name()!r}",
                          hint=f"the knowledge base catalog lives in PostgreSQL or SQLite: {forms}")
    return parsed


def catalog_url(settings: Settings) -> str | None:
    """Where the knowledge base catalog lives; None means the SQLite file ``<home>/kb/catalog.sqlite3``.

    One rule: ``knowledge.catalog_url`` when set; else, with ``knowledge.store: server``
    (vectors already shared), the state database when it is PostgreSQL (``state.database_url``,
    else ``telemetry.database_url``), so a scale deployment sets one URL; else None. With the
    embedded store the vectors belong to one process, so the catalog stays beside them.
    """
    knowledge = settings.knowledge
    if knowledge.catalog_url:
        return knowledge.catalog_url
    if knowledge.store != "server":
        return None
    setting = "state.database_url" if settings.state.database_url else "telemetry.database_url"
    shared = settings.state.database_url or settings.telemetry.database_url
    if shared and _backend(shared, setting).get_backend_name() == "postgresql":
        return shared
    return None


def open_catalog(url: str | None, folder: Path) -> CatalogStore:
    """The catalog at ``url`` (PostgreSQL or a SQLite file), or the SQLite file in ``folder`` when None."""
    if url is None:
        return Catalog(folder / "catalog.sqlite3")
    parsed = _backend(url, "knowledge.catalog_url")
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("knowledge.catalog_url must name a SQLite file",
                              hint="e.g. sqlite:////data/kb/catalog.sqlite3")
        return Catalog(Path(parsed.database))
    from .catalog_pg import PgCatalog

    return PgCatalog(url, legacy=folder / "catalog.sqlite3")


class _DocumentLocks:
    """One lock per (kb, doc id), for the writers inside this process."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: tuple[str, str], wait: bool) -> Iterator[bool]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        got = lock.acquire(blocking=wait)
        try:
            yield got
        finally:
            if got:
                lock.release()
            with self._guard:
                lock, users = self._locks[key]
                if users > 1:
                    self._locks[key] = (lock, users - 1)
                else:
                    del self._locks[key]


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """One connection serves every thread: a read must not interleave with another thread's transaction."""

    @functools.wraps(method)
    def run(self: Catalog, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class Catalog:
    """The catalog in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._documents = _DocumentLocks()
        for (kb,) in self._db.execute("SELECT DISTINCT kb FROM documents").fetchall():
            self._fts(kb)  # a store from before per-KB keyword tables gets them once, here

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

    @_locked
    def content_hash(self, kb: str, doc_id: str) -> str | None:
        row = self._db.execute("SELECT content_hash FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id)).fetchone()
        return row[0] if row else None

    @_locked
    def chunk_ids(self, kb: str, doc_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM chunks WHERE kb=? AND doc_id=?", (kb, doc_id))}

    def replace_document(self, kb: str, doc: Document, chunks: list[Chunk],
                         metadatas: list[dict[str, Any]], *, version: str) -> None:
        """Swap in a document's chunks in one transaction: searches see the old set or the new one."""
        rows = [(kb, c.id, c.doc_id, c.position, c.page, c.heading, c.text, c.context_text(doc.title),
                 json.dumps(m)) for c, m in zip(chunks, metadatas, strict=True)]
        with self._tx() as db:
            fts = self._fts(kb)
            removed = self._remove_chunks(db, fts, kb, doc.doc_id)
            db.executemany("INSERT INTO chunks (kb, id, doc_id, position, page, heading, text, indexed, metadata)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute(f"INSERT INTO {fts} (rowid, indexed) SELECT rowid, indexed FROM chunks"
                       " WHERE kb=? AND doc_id=?", (kb, doc.doc_id))
            db.execute("UPDATE kbs SET chunks = chunks + ? WHERE kb=?", (len(rows) - removed, kb))
            db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (kb, doc.doc_id, doc.uri, doc.title, doc.kind, version, doc.pages, len(chunks),
                        time.time(), json.dumps(doc.metadata)))

    @staticmethod
    def _remove_chunks(db: sqlite3.Connection, fts: str, kb: str, doc_id: str) -> int:
        old = db.execute("SELECT rowid, indexed FROM chunks WHERE kb=? AND doc_id=?", (kb, doc_id)).fetchall()
        db.executemany(f"INSERT INTO {fts} ({fts}, rowid, indexed) VALUES ('delete', ?, ?)", old)
        db.execute("DELETE FROM chunks WHERE kb=? AND doc_id=?", (kb, doc_id))
        return len(old)

    def document_lock(self, kb: str, doc_id: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        """Held by whoever writes a document (ingest, delete), so two writers of one document take turns.

        Yields False at once, without the lock, when ``wait`` is False and another writer has it.
        A SQLite catalog serves one process (the embedded store's lock), so this lock is in-process.
        """
        return self._documents.hold((kb, doc_id), wait)

    def delete_document(self, kb: str, doc_id: str) -> int:
        with self._tx() as db:
            n = self._remove_chunks(db, self._fts(kb), kb, doc_id)
            db.execute("UPDATE kbs SET chunks = chunks - ? WHERE kb=?", (n, kb))
            db.execute("DELETE FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id))
        return n

    # -- the keyword index, one FTS5 table per knowledge base ----------------------------------

    @_locked
    def _fts(self, kb: str, *, create: bool = True) -> str | None:
        """The FTS5 table of ``kb`` (made on first use, filled from its chunks if any)."""
        row = self._db.execute("SELECT n FROM kbs WHERE kb=?", (kb,)).fetchone()
        if row:
            return f"fts_{row[0]}"
        if not create:
            return None
        with self._lock:
            n = int(self._db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM kbs").fetchone()[0])
            name = f"fts_{n}"
            self._db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5(indexed, content='chunks',"
                             f" content_rowid='rowid', tokenize='{_TOKENIZE}')")
            self._db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {name}_vocab USING fts5vocab({name}, 'row')")
            self._db.execute(f"INSERT INTO {name} (rowid, indexed) SELECT rowid, indexed FROM chunks WHERE kb=?",
                             (kb,))
            count = self._db.execute("SELECT COUNT(*) FROM chunks WHERE kb=?", (kb,)).fetchone()[0]
            self._db.execute("INSERT INTO kbs VALUES (?, ?, ?)", (kb, n, count))
        return name

    def _stems(self, words: list[str]) -> dict[str, str]:
        """Each word's stem, from the same tokenizer the index uses (via a scratch in-memory table)."""
        db = self._db
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.qtok USING fts5(x, tokenize='{_TOKENIZE}')")
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.qtok_v USING fts5vocab(temp, qtok, 'instance')")
        db.executemany("INSERT INTO temp.qtok (rowid, x) VALUES (?, ?)", list(enumerate(words, 1)))
        stems = {words[doc - 1]: term for term, doc in db.execute("SELECT term, doc FROM temp.qtok_v")}
        db.execute("DELETE FROM temp.qtok")
        return stems

    def _query_words(self, kb: str, fts: str, text: str) -> list[str]:
        """The query's content words, without those too common in ``kb`` to matter (see COMMON_SHARE)."""
        words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
        words = [w for w in words if w not in _STOPWORDS] or words
        total = self._db.execute("SELECT chunks FROM kbs WHERE kb=?", (kb,)).fetchone()[0] or 0
        return keep_informative(words, total, lambda ws: self._doc_freq(fts, ws))

    def _doc_freq(self, fts: str, words: list[str]) -> dict[str, int]:
        """How many chunks hold each word (by its stem)."""
        stems = self._stems(words)
        marks = ",".join("?" * len(set(stems.values())))
        df = dict(self._db.execute(f"SELECT term, doc FROM {fts}_vocab WHERE term IN ({marks})",
                                   sorted(set(stems.values()))).fetchall())
        return {w: df.get(stems.get(w, ""), 0) for w in words}

    @_locked
    def find_documents(self, kb: str, ref: str) -> list[str]:
        """Doc ids matching an id, an id prefix, a uri or a path that resolves to a uri."""
        resolved = str(Path(ref).resolve()) if not ref.startswith(("pydoc:", "http")) else ref
        rows = self._db.execute(
            "SELECT doc_id FROM documents WHERE kb=? AND (doc_id=? OR uri=? OR uri=? OR doc_id LIKE ?)",
            (kb, ref, ref, resolved, ref.replace("%", "") + "%")).fetchall()
        return sorted({r[0] for r in rows})

    @_locked
    def documents(self, kb: str) -> list[DocRow]:
        cur = self._db.execute("SELECT doc_id, uri, title, kind, pages, chunks, ingested_at FROM documents"
                               " WHERE kb=? ORDER BY uri", (kb,))
        names = [d[0] for d in cur.description]
        return [DocRow(zip(names, row, strict=True)) for row in cur]

    @_locked
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

    @_locked
    def pending(self, kb: str) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT doc_id FROM pending WHERE kb=?", (kb,))]

    # -- reading ----------------------------------------------------------------------------

    @_locked
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
        with self._lock:
            fts = self._fts(kb, create=False)
            if fts is None:
                return []
            words = self._query_words(kb, fts, query)
            if not words:
                return []
            match = " OR ".join(f'"{w}"' for w in words)
            if where:
                params: list[Any] = [match]
                filt = where_sql(where, params)
                q = (f"SELECT c.id, bm25({fts}) AS s FROM {fts} JOIN chunks c ON c.rowid = {fts}.rowid"
                     f" WHERE {fts} MATCH ? AND {filt} ORDER BY s LIMIT ?")
                return [(cid, -score) for cid, score in self._db.execute(q, [*params, n])]
            top = self._db.execute(f"SELECT rowid, bm25({fts}) AS s FROM {fts} WHERE {fts} MATCH ?"
                                   " ORDER BY s LIMIT ?", (match, n)).fetchall()
            if not top:
                return []
            ids = dict(self._db.execute(f"SELECT rowid, id FROM chunks WHERE rowid IN ({','.join('?' * len(top))})",
                                        [r for r, _ in top]).fetchall())
            return [(ids[r], -score) for r, score in top if r in ids]

    def rebuild_keyword_index(self) -> None:
        """Remake every knowledge base's FTS5 table from its chunk rows."""
        with self._tx() as db:
            for kb, n in db.execute("SELECT kb, n FROM kbs").fetchall():
                db.execute(f"INSERT INTO fts_{n} (fts_{n}) VALUES ('delete-all')")
                db.execute(f"INSERT INTO fts_{n} (rowid, indexed) SELECT rowid, indexed FROM chunks WHERE kb=?",
                           (kb,))
                db.execute("UPDATE kbs SET chunks = (SELECT COUNT(*) FROM chunks WHERE kb=?) WHERE kb=?", (kb, kb))

    @_locked
    def count_chunks(self, kb: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks WHERE kb=?", (kb,)).fetchone()[0])
