"""The knowledge base catalog in PostgreSQL, shared by every API replica and worker.

The same catalog as the SQLite :class:`~keel.knowledge.catalog.Catalog`
(documents, chunk texts, pending markers, keyword search), in five tables that
can share a database with keel's traces, jobs and run state: ``kb_documents``,
``kb_chunks``, ``kb_pending``, ``kb_stats`` and ``kb_terms``. ``knowledge.catalog_url``
selects it (see :func:`~keel.knowledge.catalog.catalog_url`).

**Keyword search** is PostgreSQL full-text search: a stored ``tsvector`` column of
each chunk's indexed text (``english`` configuration: Snowball stemming, stop
words), written in the transaction that writes the row, so it cannot drift from
the chunks, and kept in the row (its texts go out of line first) so a search reads
no TOAST. As with FTS5, a query is the OR of its words and a match is ranked by
BM25 with FTS5's constants (k1 1.2, b 0.75, idf ``ln((N - n + 0.5) / (n + 0.5))``,
at least 1e-6), computed in SQL: a word's frequency in a chunk is its number of
positions in the tsvector, a chunk's length its number of words (a stored column).
N and the total length per knowledge base are kept in ``kb_stats`` by every write (as
the SQLite catalog keeps its chunk count), and each word's number of chunks per
knowledge base (n, as FTS5's vocabulary table has it) in ``kb_terms``, by a trigger on
the chunk rows, so whichever code writes them the counts follow. On the Python
language reference the top keyword hit is the SQLite catalog's for 29 of 30 test
questions. What still differs: words are PostgreSQL's tokens (``2.4`` is one token,
FTS5 reads ``2`` and ``4``) and stems (Snowball, not Porter); its stop-word list is
longer (those words match nothing); accents are kept. The same common-word pruning
applies from ``PRUNE_FROM_CHUNKS`` chunks (:func:`~keel.knowledge.catalog.keep_informative`).

Three things keep it fast at 100k chunks (bench/bench_catalog_pg.py): the GIN index
holds, beside a chunk's words, one lexeme naming its knowledge base, so a search's
index scan hands over only its own knowledge base's matches (FTS5 has a table per
knowledge base for the same reason); word counts are read from ``kb_terms``, not
counted from the index per search; and MaxScore (:func:`_top`) scores the chunks of
the rarest words first and never reads those that cannot reach the top ``n``,
with the same result as scoring every match.

**Concurrency.** ``replace_document`` and ``delete_document`` are one transaction
each, opened by a transaction-scoped advisory lock on the document: two replicas
replacing one document take turns, and readers see its old chunk set or its new
one, never a mix or both. Writers of one knowledge base take turns on its word
counts (the trigger's transaction lock, from its first chunk row to the commit: the
catalog write, not the embedding before it). The whole ingest of a document
(vectors, catalog, stale vectors) holds a session advisory lock on it
(:meth:`PgCatalog.document_lock`), so a second writer waits and then finds it
stored; recovery leaves alone a pending document whose writer is alive, and
recovers one whose writer died (its session, and lock, ended with it) on the next
ingest, on any replica.

**Schema**: created on open with ``CREATE ... IF NOT EXISTS``, in one transaction
under an advisory lock (replicas starting together take turns; DDL is
transactional in PostgreSQL, so all of it exists or none). Not Alembic, as
telemetry uses: five tables, three indexes, a trigger function, changed additively
with idempotent DDL the way the SQLite catalog is; a change that must rewrite data
would be the time for a migration in its own version table. A catalog made by an
earlier version is brought up to date on open (here 4 s at 100k chunks): the
knowledge-base-aware index is built, ``kb_terms`` counted from the rows, then the
old index dropped (last, as that lock stops readers until the commit). Its rows
keep their storage until rewritten, so their index vectors stay out of line (TOAST)
until their documents are ingested again: correct, but slower to search. When this
creates the tables and the data directory holds a SQLite catalog (a store that ran
before the catalog moved), its rows are copied in, in the same transaction; the file
is left as it was.

**Errors**: a URL that is not a database URL, or a driver other than psycopg:
``ConfigError``; psycopg missing: ``MissingDependency`` (``keel[scale]``); the
server unreachable, at open or later: ``RetrievalError`` (exit 6, HTTP 503), as for
the Chroma server. A failed write is rolled back: nothing stored is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import ConfigError, InputError, MissingDependency, RetrievalError, redact_url
from .catalog import DocRow, filter_sql, keep_informative
from .chunking import Chunk
from .loaders import Document

__all__ = ["PgCatalog"]

log = logging.getLogger("keel.knowledge")

#: text search configuration of the keyword index (stemming and stop words)
TEXT_CONFIG = "english"
#: advisory lock namespaces: a document's writer (session, a whole ingest); one write transaction;
#: a knowledge base's word counts (taken by the trigger that keeps them, with ``hashtext(kb)``)
_WRITER_NS, _WRITE_NS, _TERMS_NS = 0x6B62, 0x6B63, 0x6B64
#: advisory lock serialising schema creation ("keelkbca")
_SETUP_KEY = 0x6B65656C_6B626361
#: what the keyword index holds for a chunk: its words, and one lexeme naming its knowledge base (a space
#: inside: no parsed word has one), so a search of one knowledge base finds its matches inside the index
_SEARCHED = "(c.tsv || array_to_tsvector(ARRAY[' kb:' || md5(c.kb)]))"
#: the tsquery of that lexeme for the knowledge base ``%(kb)s``
_KB_QUERY = "CAST(quote_literal(' kb:' || md5(CAST(%(kb)s AS text))) AS tsquery)"
#: the triggers keeping ``kb_terms``: (name, event, transition table, sign of the count); one event each, as
#: PostgreSQL allows transition tables only there (an update counts its old rows out and its new rows in)
_TERM_TRIGGERS = (("kb_terms_insert", "INSERT", "NEW", 1), ("kb_terms_delete", "DELETE", "OLD", -1),
                  ("kb_terms_update_old", "UPDATE", "OLD", -1), ("kb_terms_update_new", "UPDATE", "NEW", 1))

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kb_documents (
        kb TEXT NOT NULL, doc_id TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL,
        content_hash TEXT NOT NULL, pages INTEGER NOT NULL, chunks INTEGER NOT NULL,
        ingested_at DOUBLE PRECISION NOT NULL, metadata JSONB NOT NULL DEFAULT '{}', PRIMARY KEY (kb, doc_id))""",
    f"""CREATE TABLE IF NOT EXISTS kb_chunks (
        kb TEXT NOT NULL, id TEXT NOT NULL, doc_id TEXT NOT NULL, position INTEGER NOT NULL, page INTEGER,
        heading TEXT, text TEXT NOT NULL, indexed TEXT NOT NULL, metadata JSONB NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('{TEXT_CONFIG}', indexed)) STORED,
        tokens INTEGER GENERATED ALWAYS AS (array_length(regexp_split_to_array(indexed, '\\W+'), 1)) STORED,
        PRIMARY KEY (kb, id))""",
    "CREATE INDEX IF NOT EXISTS kb_chunks_doc ON kb_chunks (kb, doc_id)",
    f"CREATE INDEX IF NOT EXISTS kb_chunks_search ON kb_chunks USING GIN ({_SEARCHED.replace('c.', '')})",
    """CREATE TABLE IF NOT EXISTS kb_pending (kb TEXT NOT NULL, doc_id TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kb, doc_id))""",
    """CREATE TABLE IF NOT EXISTS kb_stats (kb TEXT PRIMARY KEY, chunks BIGINT NOT NULL, tokens BIGINT NOT NULL)""",
    # each word's number of chunks per knowledge base, kept by the database itself with every chunk row
    # written (whichever code writes it); one writer of a knowledge base's counts at a time
    """CREATE TABLE IF NOT EXISTS kb_terms (kb TEXT NOT NULL, lexeme TEXT NOT NULL, chunks INTEGER NOT NULL,
        PRIMARY KEY (kb, lexeme))""",
    f"""CREATE OR REPLACE FUNCTION kb_terms_count() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT
        AS $$ BEGIN
            PERFORM pg_advisory_xact_lock({_TERMS_NS}, h) FROM (SELECT DISTINCT hashtext(kb) AS h FROM changed) k
                ORDER BY h;
            INSERT INTO kb_terms AS t (kb, lexeme, chunks)
                SELECT kb, lexeme, TG_ARGV[0]::integer * COUNT(*) FROM changed, unnest(tsvector_to_array(tsv)) lexeme
                GROUP BY kb, lexeme ORDER BY kb, lexeme
                ON CONFLICT (kb, lexeme) DO UPDATE SET chunks = t.chunks + EXCLUDED.chunks;
            RETURN NULL;
        END $$""",
    *(statement for name, event, rows, sign in _TERM_TRIGGERS for statement in (
        f"DROP TRIGGER IF EXISTS {name} ON kb_chunks",
        f"""CREATE TRIGGER {name} AFTER {event} ON kb_chunks REFERENCING {rows} TABLE AS changed
            FOR EACH STATEMENT EXECUTE FUNCTION kb_terms_count('{sign}')""")),
]
#: run last when the schema is made or changed: they lock out readers until the commit, so briefly
_SCHEMA_LAST = [
    # keep a chunk's index vector in its row (its texts go out of line first): a search reads no TOAST
    "ALTER TABLE kb_chunks ALTER COLUMN tsv SET STORAGE MAIN",
    "DROP INDEX IF EXISTS kb_chunks_tsv",  # the index before kb_chunks_search
]
_OBJECTS = ("kb_documents", "kb_chunks", "kb_chunks_doc", "kb_chunks_search", "kb_pending", "kb_stats", "kb_terms")
#: objects of earlier versions (dropped by _SCHEMA_LAST)
_RETIRED = ("kb_chunks_tsv",)
_INSERT_DOCUMENT = (
    "INSERT INTO kb_documents (kb, doc_id, uri, title, kind, content_hash, pages, chunks, ingested_at, metadata)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)")
_INSERT_CHUNK = ("INSERT INTO kb_chunks (kb, id, doc_id, position, page, heading, text, indexed, metadata)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)")
#: BM25's constants, FTS5's defaults
_K1, _B = 1.2, 0.75
#: words are scored together while they hold at most this many chunks in all (a query costs about as much
#: as scoring 100-150 chunks; see _top)
_BATCH = 200
#: add (chunks, tokens) to a knowledge base's totals
_ADD_STATS = ("INSERT INTO kb_stats VALUES (%s, %s, %s) ON CONFLICT (kb) DO UPDATE"
              " SET chunks = kb_stats.chunks + EXCLUDED.chunks, tokens = kb_stats.tokens + EXCLUDED.tokens")
_DELETE_CHUNKS = ("WITH gone AS (DELETE FROM kb_chunks WHERE kb=%s AND doc_id=%s RETURNING tokens)"
                  " SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM gone")
#: the best chunks of a knowledge base matching any word of ``match`` (and no word of ``seen``), each scored
#: by BM25 over all the query's words it holds; ties in chunk id order (bytes, as Python orders str)
_BM25 = f"""SELECT c.id, (SELECT SUM(w.idf * cardinality(f.positions) * {_K1 + 1}
            / (cardinality(f.positions) + {_K1} * ({1 - _B} + c.tokens * CAST(%(b_avg)s AS float8))))
        FROM unnest(ts_filter(setweight(c.tsv, 'A', CAST(%(words)s AS text[])), '{{a}}')) f
        JOIN unnest(CAST(%(words)s AS text[]), CAST(%(idfs)s AS float8[])) AS w(lexeme, idf) ON w.lexeme = f.lexeme
    ) AS score
    FROM kb_chunks c
    WHERE {_SEARCHED} @@ (CAST(%(match)s AS tsquery) && {_KB_QUERY}) AND c.kb = %(kb)s{{seen}}{{filter}}
    ORDER BY score DESC, c.id COLLATE "C" LIMIT %(n)s"""
_HINT = ("start PostgreSQL or fix knowledge.catalog_url (default with knowledge.store: server: the state "
         "database when it is PostgreSQL); nothing stored is lost, a write that failed was rolled back")


def _key(kb: str, doc_id: str) -> int:
    """A document's advisory lock key (32 bits; a collision only makes two documents take turns)."""
    return int.from_bytes(hashlib.blake2b(f"{kb}\0{doc_id}".encode(), digest_size=4).digest(), "big", signed=True)


def _clean(value: Any) -> Any:
    """PostgreSQL text and jsonb hold no NUL character (SQLite's text does): each becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(_clean(value))


def _first_line(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, without SQLAlchemy's statement and link."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def _tsquery(lexeme: str) -> str:
    """One lexeme as a tsquery literal, taken as it is (no parsing, no stemming)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"knowledge.catalog_url {url!r} is not a database URL",
                          hint="use postgresql+psycopg://user@host/db") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise ConfigError(f"knowledge.catalog_url uses the driver {parsed.drivername!r}",
                          hint="keel reaches PostgreSQL through psycopg 3: postgresql+psycopg://user@host/db")
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
    try:
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4,
                                connect_args=connect_args)
    except ModuleNotFoundError:
        raise MissingDependency("the PostgreSQL driver (psycopg)", "scale") from None


class PgCatalog:
    """The catalog in PostgreSQL at ``url`` (see the module docstring).

    ``legacy``: a SQLite catalog file to copy in when this creates the tables.
    """

    def __init__(self, url: str, *, legacy: Path | None = None) -> None:
        self.url = url
        self._engine = _engine(url)
        #: documents copied from ``legacy`` when the tables were created (else 0)
        self.imported = 0
        try:
            self._setup(legacy)
        except BaseException:
            self._engine.dispose()
            raise

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.DataError as exc:
            raise InputError(f"the knowledge base catalog refused a value: {_first_line(exc)}",
                             hint="check the knowledge base name and the document's fields") from None
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            detail = _first_line(exc)
            raise RetrievalError(f"the knowledge base catalog at {redact_url(self.url)} cannot {action}: {detail}",
                                 hint=_HINT) from None

    @contextmanager
    def _connect(self, action: str, *, write: bool = False, snapshot: bool = False) -> Iterator[sa.Connection]:
        """A connection; with ``write`` in a transaction committed on exit (rolled back on error); with
        ``snapshot`` every statement reads the same snapshot (a read-only REPEATABLE READ transaction)."""
        with self._translate(action), (self._engine.begin() if write else self._engine.connect()) as conn:
            if snapshot:
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def _setup(self, legacy: Path | None) -> None:
        with self._connect("be opened", write=True) as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_SETUP_KEY,))
            found = {name for name in (*_OBJECTS, *_RETIRED)
                     if conn.exec_driver_sql("SELECT to_regclass(%s)", (name,)).scalar() is not None}
            missing = set(_OBJECTS) - found
            if not missing and not found & set(_RETIRED):
                return
            for statement in _SCHEMA:
                conn.exec_driver_sql(statement)
            if "kb_documents" in missing and legacy is not None and legacy.is_file():
                self.imported = _copy_sqlite(conn, legacy)
            if missing:  # totals and word counts of the rows copied in, or of a catalog made before kb_terms
                _recount(conn)
            for statement in _SCHEMA_LAST:
                conn.exec_driver_sql(statement)
    def close(self) -> None:
        self._engine.dispose()

    # -- documents --------------------------------------------------------------------------

    def content_hash(self, kb: str, doc_id: str) -> str | None:
        with self._connect("be read") as conn:
            return conn.exec_driver_sql("SELECT content_hash FROM kb_documents WHERE kb=%s AND doc_id=%s",
                                        (kb, doc_id)).scalar()

    def chunk_ids(self, kb: str, doc_id: str) -> set[str]:
        with self._connect("be read") as conn:
            return set(conn.exec_driver_sql("SELECT id FROM kb_chunks WHERE kb=%s AND doc_id=%s",
                                            (kb, doc_id)).scalars())

    def replace_document(self, kb: str, doc: Document, chunks: list[Chunk],
                         metadatas: list[dict[str, Any]], *, version: str) -> None:
        """Swap in a document's chunks in one transaction: searches see the old set or the new one."""
        rows = [(kb, c.id, c.doc_id, c.position, c.page, _clean(c.heading), _clean(c.text),
                 _clean(c.context_text(doc.title)), _json(m)) for c, m in zip(chunks, metadatas, strict=True)]
        with self._connect("store a document", write=True) as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (_WRITE_NS, _key(kb, doc.doc_id)))
            old_chunks, old_tokens = conn.exec_driver_sql(_DELETE_CHUNKS, (kb, doc.doc_id)).one()
            if rows:
                conn.exec_driver_sql(_INSERT_CHUNK, rows)  # type: ignore[arg-type]
            conn.exec_driver_sql(
                _INSERT_DOCUMENT + " ON CONFLICT (kb, doc_id) DO UPDATE SET uri=EXCLUDED.uri, title=EXCLUDED.title,"
                " kind=EXCLUDED.kind, content_hash=EXCLUDED.content_hash, pages=EXCLUDED.pages,"
                " chunks=EXCLUDED.chunks, ingested_at=EXCLUDED.ingested_at, metadata=EXCLUDED.metadata",
                (kb, doc.doc_id, _clean(doc.uri), _clean(doc.title), doc.kind, version, doc.pages, len(chunks),
                 time.time(), _json(doc.metadata)))
            tokens = conn.exec_driver_sql("SELECT COALESCE(SUM(tokens), 0) FROM kb_chunks WHERE kb=%s AND doc_id=%s",
                                          (kb, doc.doc_id)).scalar()
            conn.exec_driver_sql(_ADD_STATS, (kb, len(rows) - old_chunks, tokens - old_tokens))

    def delete_document(self, kb: str, doc_id: str) -> int:
        with self._connect("delete a document", write=True) as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (_WRITE_NS, _key(kb, doc_id)))
            removed, tokens = conn.exec_driver_sql(_DELETE_CHUNKS, (kb, doc_id)).one()
            conn.exec_driver_sql("DELETE FROM kb_documents WHERE kb=%s AND doc_id=%s", (kb, doc_id))
            conn.exec_driver_sql(_ADD_STATS, (kb, -removed, -tokens))
        return int(removed)

    @contextmanager
    def document_lock(self, kb: str, doc_id: str, *, wait: bool = True) -> Iterator[bool]:
        """Held by whoever writes a document (ingest, delete), on any replica: two writers take turns.

        A session advisory lock on a connection of its own (autocommit: no transaction stays
        open while the document is embedded); it ends with the session if the process dies.
        Yields False at once, without the lock, when ``wait`` is False and another writer has it.
        """
        with self._translate("lock a document"):
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = False
        try:
            with self._translate("lock a document"):
                if wait:
                    conn.exec_driver_sql("SELECT pg_advisory_lock(%s, %s)", (_WRITER_NS, _key(kb, doc_id)))
                    got = True
                else:
                    got = bool(conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s, %s)",
                                                    (_WRITER_NS, _key(kb, doc_id))).scalar())
            yield got
        finally:
            try:
                if got:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(%s, %s)", (_WRITER_NS, _key(kb, doc_id)))
            except sa.exc.DBAPIError:
                conn.invalidate()  # the session ends, and the lock with it
            conn.close()

    def find_documents(self, kb: str, ref: str) -> list[str]:
        """Doc ids matching an id, an id prefix, a uri or a path that resolves to a uri."""
        resolved = str(Path(ref).resolve()) if not ref.startswith(("pydoc:", "http")) else ref
        with self._connect("be read") as conn:
            rows = conn.exec_driver_sql(
                "SELECT doc_id FROM kb_documents WHERE kb=%s AND (doc_id=%s OR uri=%s OR uri=%s"
                " OR doc_id ILIKE %s ESCAPE '')", (kb, ref, ref, resolved, ref.replace("%", "") + "%")).scalars()
            return sorted(set(rows))

    def documents(self, kb: str) -> list[DocRow]:
        with self._connect("be read") as conn:
            result = conn.exec_driver_sql(
                "SELECT doc_id, uri, title, kind, pages, chunks, ingested_at FROM kb_documents"
                ' WHERE kb=%s ORDER BY uri COLLATE "C"', (kb,))
            return [DocRow(row._mapping) for row in result]

    def kbs(self) -> list[dict[str, Any]]:
        with self._connect("be read") as conn:
            rows = conn.exec_driver_sql('SELECT kb, COUNT(*), SUM(chunks), SUM(pages) FROM kb_documents'
                                        ' GROUP BY kb ORDER BY kb COLLATE "C"').all()
        return [{"kb": kb, "documents": d, "chunks": int(c or 0), "pages": int(p or 0)} for kb, d, c, p in rows]

    # -- interrupted runs -------------------------------------------------------------------

    def mark_pending(self, kb: str, doc_id: str) -> None:
        with self._connect("mark a document pending", write=True) as conn:
            conn.exec_driver_sql("INSERT INTO kb_pending VALUES (%s, %s, %s) ON CONFLICT (kb, doc_id)"
                                 " DO UPDATE SET started_at=EXCLUDED.started_at", (kb, doc_id, time.time()))

    def clear_pending(self, kb: str, doc_id: str) -> None:
        with self._connect("clear a pending mark", write=True) as conn:
            conn.exec_driver_sql("DELETE FROM kb_pending WHERE kb=%s AND doc_id=%s", (kb, doc_id))

    def pending(self, kb: str) -> list[str]:
        with self._connect("be read") as conn:
            return list(conn.exec_driver_sql("SELECT doc_id FROM kb_pending WHERE kb=%s", (kb,)).scalars())

    # -- reading ----------------------------------------------------------------------------

    def chunks_by_id(self, kb: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(ids)
        if not ids:
            return {}
        with self._connect("be read") as conn:
            rows = conn.exec_driver_sql(
                "SELECT c.id, c.doc_id, c.position, c.page, c.heading, c.text, d.title, d.uri, c.metadata"
                " FROM kb_chunks c JOIN kb_documents d ON d.kb=c.kb AND d.doc_id=c.doc_id"
                " WHERE c.kb=%s AND c.id = ANY(%s)", (kb, ids)).all()
        return {cid: {"id": cid, "doc_id": doc_id, "position": pos, "page": page, "heading": heading, "text": text,
                      "title": title, "uri": uri, "metadata": meta}
                for cid, doc_id, pos, page, heading, text, title, uri, meta in rows}

    def keyword_search(self, kb: str, query: str, n: int,
                       where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; the score is positive, higher is better."""
        with self._connect("be searched", snapshot=True) as conn:  # counts and matches from one moment
            stats = conn.exec_driver_sql("SELECT chunks, tokens FROM kb_stats WHERE kb=%s", (kb,)).one_or_none()
            lexemes = conn.exec_driver_sql("SELECT tsvector_to_array(to_tsvector(%s::regconfig, %s))",
                                           (TEXT_CONFIG, query)).scalar()
            if not stats or not stats[0] or not lexemes:
                return []
            total, tokens = int(stats[0]), int(stats[1])
            df: dict[str, int] = dict(conn.exec_driver_sql(  # type: ignore[arg-type]
                "SELECT lexeme, chunks FROM kb_terms WHERE kb=%s AND lexeme = ANY(%s) AND chunks > 0",
                (kb, lexemes)).all())
            words = [w for w in keep_informative(lexemes, total, lambda _: df) if w in df]
            if not words:
                return []
            idf = {w: max(1e-6, math.log((max(total - df[w], 0) + 0.5) / (df[w] + 0.5))) for w in words}
            params: dict[str, Any] = {"kb": kb, "n": n, "words": words, "idfs": [idf[w] for w in words],
                                      "b_avg": _B / max(tokens / total, 1.0)}
            statement = _BM25.replace("{filter}", _filter(where, params))

            def best(match: str, seen: list[str]) -> list[tuple[str, float]]:
                sql = statement.replace("{seen}", " AND NOT c.tsv @@ CAST(%(seen)s AS tsquery)" if seen else "")
                rows = conn.exec_driver_sql(sql, {**params, "match": match, "seen": _any(seen)}).all()
                return [(cid, float(score)) for cid, score in rows]

            return _top(best, df, idf, n)

    def rebuild_keyword_index(self) -> None:
        """Rebuild the GIN index and recount each knowledge base's totals and word counts (the tsvector
        column is recomputed with every row write and the word counts kept by a trigger: neither drifts)."""
        with self._connect("rebuild its keyword index", write=True) as conn:
            conn.exec_driver_sql("LOCK TABLE kb_chunks IN SHARE MODE")  # writers wait, and take it first
            conn.exec_driver_sql("REINDEX INDEX kb_chunks_search")
            _recount(conn)

    def count_chunks(self, kb: str) -> int:
        with self._connect("be read") as conn:
            return int(conn.exec_driver_sql("SELECT COUNT(*) FROM kb_chunks WHERE kb=%s", (kb,)).scalar() or 0)


def _copy_sqlite(conn: sa.Connection, path: Path, batch: int = 2000) -> int:
    """Copy a SQLite catalog's documents, chunks and pending marks (in ``conn``'s transaction; the caller
    counts the totals).

    A file keel cannot read is skipped with a warning (the tables are made all the same).
    """
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        log.warning("the SQLite catalog %s was not copied into PostgreSQL: %s", path, exc)
        return 0
    savepoint = conn.begin_nested()
    try:
        docs = src.execute("SELECT kb, doc_id, uri, title, kind, content_hash, pages, chunks, ingested_at, metadata"
                           " FROM documents").fetchall()
        if docs:
            conn.exec_driver_sql(_INSERT_DOCUMENT, [tuple(_clean(v) for v in d[:9]) + (_json(json.loads(d[9])),)
                                                    for d in docs])
        rows = src.execute("SELECT kb, id, doc_id, position, page, heading, text, indexed, metadata FROM chunks")
        while chunk_rows := rows.fetchmany(batch):
            conn.exec_driver_sql(_INSERT_CHUNK, [tuple(_clean(v) for v in r[:8]) + (_json(json.loads(r[8])),)
                                                 for r in chunk_rows])
        pending = src.execute("SELECT kb, doc_id, started_at FROM pending").fetchall()
        if pending:
            conn.exec_driver_sql("INSERT INTO kb_pending VALUES (%s, %s, %s)", pending)
    except sqlite3.Error as exc:
        savepoint.rollback()
        log.warning("the SQLite catalog %s was not copied into PostgreSQL: %s", path, exc)
        return 0
    finally:
        src.close()
    savepoint.commit()
    log.info("copied %d documents from the SQLite catalog %s into the PostgreSQL catalog (the file is kept)",
             len(docs), path)
    return len(docs)


def _recount(conn: sa.Connection) -> None:
    """Each knowledge base's chunk and token totals and word counts, counted again from its rows."""
    conn.exec_driver_sql("LOCK TABLE kb_chunks IN SHARE MODE")  # writers wait (they lock it before the counts)
    conn.exec_driver_sql("LOCK TABLE kb_stats, kb_terms IN EXCLUSIVE MODE")
    conn.exec_driver_sql("DELETE FROM kb_stats")
    conn.exec_driver_sql("INSERT INTO kb_stats SELECT kb, COUNT(*), COALESCE(SUM(tokens), 0) FROM kb_chunks"
                         " GROUP BY kb")
    conn.exec_driver_sql("DELETE FROM kb_terms")
    conn.exec_driver_sql("INSERT INTO kb_terms SELECT kb, lexeme, COUNT(*) FROM kb_chunks,"
                         " unnest(tsvector_to_array(tsv)) lexeme GROUP BY kb, lexeme")


def _any(lexemes: list[str]) -> str:
    """A tsquery matching any of ``lexemes``."""
    return " | ".join(_tsquery(w) for w in lexemes)


def _filter(where: dict[str, Any] | None, params: dict[str, Any]) -> str:
    """A metadata filter as a condition on the chunk row ``c`` (``AND ...``; values added to ``params``)."""
    if not where:
        return ""

    def bind(value: Any) -> str:
        name = f"w{len(params)}"
        params[name] = json.dumps(value)
        return f"CAST(%({name})s AS jsonb)"

    return " AND " + filter_sql(where, lambda key: f"(c.metadata -> '{key}')", bind, "TRUE")


def _top(best: Callable[[str, list[str]], list[tuple[str, float]]], df: dict[str, int],
         idf: dict[str, float], n: int, batch: int = _BATCH) -> list[tuple[str, float]]:
    """The ``n`` chunks with the best BM25 over all the words of ``idf``, scoring as few chunks as it can.

    ``best(match, seen)``: the ``n`` best of the chunks matching the tsquery ``match`` and holding none of
    the words ``seen``, each scored over all the words. A word adds less than ``idf * (k1 + 1)``, its bound,
    to a chunk's score (BM25's limit as its frequency grows), so a chunk whose words' bounds sum below the
    n-th best score found so far, the floor, cannot enter the top ``n`` (MaxScore). The rarest words make
    the high scores: their chunks are scored first, a few words at a time (while they hold at most
    ``batch`` chunks in all), and the floor rises. Once no word left can place a chunk by itself, one last
    query scores the chunks holding a set of words left whose bounds reach the floor (each such set,
    smallest first, is an AND in its tsquery); no other chunk can place. The result is the top ``n`` of
    scoring every match, ties in chunk id order (as the database's ORDER BY).
    """
    left = sorted(idf, key=lambda w: (df[w], w))  # rarest first: highest bound first
    bound = {w: (_K1 + 1) * idf[w] for w in idf}
    seen: list[str] = []
    top: list[tuple[str, float]] = []
    while left:
        floor = top[n - 1][1] if 0 < n <= len(top) else 0.0
        sets = _reaching([(w, bound[w]) for w in left], floor)
        if sets is not None and all(len(words) > 1 for words in sets):
            if sets:
                top += best(" | ".join("(" + " & ".join(map(_tsquery, words)) + ")" for words in sets), seen)
            break
        take = 1  # the rarest left, and the next while they stay few (a query costs as much as ~100 chunks)
        while take < len(left) and sum(df[w] for w in left[:take + 1]) <= batch:
            take += 1
        top = sorted(top + best(_any(left[:take]), seen), key=lambda hit: (-hit[1], hit[0]))[:n]
        seen += left[:take]
        del left[:take]
    return sorted(top, key=lambda hit: (-hit[1], hit[0]))[:n]


def _reaching(bounds: list[tuple[str, float]], floor: float, most: int = 64) -> list[list[str]] | None:
    """The smallest sets of words whose bounds sum to ``floor`` or more (none smaller does); None when
    there are more than ``most`` of them. ``bounds`` is in descending order of bound."""
    found: list[list[str]] = []
    rest = [sum(b for _, b in bounds[i:]) for i in range(len(bounds))]  # what the words from i on add up to

    def grow(start: int, words: list[str], total: float) -> bool:
        for i in range(start, len(bounds)):
            if total + rest[i] < floor or len(found) > most:
                break
            word, b = bounds[i]
            if total + b >= floor:
                found.append([*words, word])
            elif not grow(i + 1, [*words, word], total + b):
                break
        return len(found) <= most

    return found if grow(0, [], 0.0) else None
