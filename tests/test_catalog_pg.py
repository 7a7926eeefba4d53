"""The knowledge base catalog in PostgreSQL (``knowledge.catalog_url``), against the real local server.

Vectors live in the embedded Chroma unless a test is about replicas, which share a real
``chroma run`` server; embeddings come from the shipped HashEmbedder (no model).
"""

from __future__ import annotations

import math
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from keel import App
from keel.config import KnowledgeSettings, load_settings
from keel.errors import ConfigError, MissingDependency, RetrievalError
from keel.knowledge import Document, IngestReport, KnowledgeBase, catalog_pg, demo_documents
from keel.knowledge.catalog import Catalog, catalog_url
from keel.knowledge.catalog_pg import PgCatalog
from keel.knowledge.chunking import Chunk, chunk_document
from keel.knowledge.testing import HashEmbedder

from .chroma_fixtures import chroma_server, free_port
from .test_knowledge_kb import (  # noqa: F401 - the test_* are collected here again, with this module's `kb`
    assert_consistent,
    catalog_chunk_ids,
    test_changed_document_replaces_its_chunks,
    test_crash_between_vectors_and_catalog_is_recovered,
    test_delete_doc_removes_chunks_and_vectors,
    test_ingest_then_search_finds_the_page,
    test_metadata_filters_apply_to_both_sides,
    test_named_knowledge_bases_are_separate,
    test_same_documents_twice_add_nothing,
    vector_ids,
    write_corpus,
)

pytestmark = pytest.mark.scale

SMALL = {"chunk_tokens": 60, "chunk_overlap": 10}


@pytest.fixture(scope="module")
def chroma_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Chroma server shared by this module's replica tests (each uses a knowledge base name of its own)."""
    with chroma_server(tmp_path_factory.mktemp("chroma")) as port:
        yield port


@pytest.fixture
def kb(tmp_path: Path, pg_url: str) -> Iterator[KnowledgeBase]:
    base = KnowledgeBase(KnowledgeSettings(catalog_url=pg_url, **SMALL), tmp_path / "home", embedder=HashEmbedder())
    yield base
    base.close()


def replica(pg_url: str, port: int, home: Path) -> KnowledgeBase:
    """One API replica: its own data directory, the shared Chroma server and PostgreSQL catalog."""
    settings = KnowledgeSettings(store="server", server_host="127.0.0.1", server_port=port, catalog_url=pg_url,
                                 **SMALL)
    return KnowledgeBase(settings, home, embedder=HashEmbedder())


# -- the catalog through the knowledge base -------------------------------------------------------
# test_knowledge_kb.py's tests imported above (ingest and search, idempotency, replace, delete, named
# knowledge bases, filters, crash recovery) run here on PostgreSQL; what follows is PostgreSQL's own.


def test_the_postgres_catalog_keeps_documents_and_totals(kb: KnowledgeBase, tmp_path: Path) -> None:
    assert isinstance(kb.catalog, PgCatalog)
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    assert kb.list_kbs() == [{"kb": "default", "documents": 4, "chunks": 7, "pages": 3}]
    assert [d["title"] for d in kb.documents()] == ["Car Manual", "Garden", "Kitchen", "notes"]
    assert not (tmp_path / "home" / "kb" / "catalog.sqlite3").exists()  # no SQLite catalog beside it
    kb.delete_doc(str(tmp_path / "docs/car.pdf"))
    assert kb.search("tyre pressure", mode="keyword") == []
    assert kb.list_kbs() == [{"kb": "default", "documents": 3, "chunks": 4, "pages": 0}]
    kb.rebuild_keyword_index()
    assert kb.search("plumber October", mode="keyword")[0].title == "notes"


# -- the same answers as the SQLite catalog ---------------------------------------------------------


@contextmanager
def twins(tmp_path: Path, pg_url: str, **settings: int) -> Iterator[tuple[KnowledgeBase, KnowledgeBase]]:
    """Two knowledge bases alike but for the catalog: PostgreSQL, SQLite."""
    pg = KnowledgeBase(KnowledgeSettings(catalog_url=pg_url, **settings), tmp_path / "pg", embedder=HashEmbedder())
    lite = KnowledgeBase(KnowledgeSettings(**settings), tmp_path / "sqlite", embedder=HashEmbedder())
    assert (type(pg.catalog), type(lite.catalog)) == (PgCatalog, Catalog)
    try:
        yield pg, lite
    finally:
        pg.close()
        lite.close()


def test_keyword_search_ranks_like_the_sqlite_catalog(tmp_path: Path, pg_url: str) -> None:
    """BM25 in SQL over PostgreSQL's index: the same top hit as FTS5 on the Python language reference."""
    docs = demo_documents()
    with twins(tmp_path, pg_url) as (pg, lite):
        pg.ingest_documents(docs)
        lite.ingest_documents(docs)
        questions = ["What does the global statement do?", "with statement context manager", "lambda expressions",
                     "operator precedence", "nonlocal", "string literal prefixes raw bytes", "comparison chaining",
                     "try finally clause", "integer literals underscores", "await expression"]
        for question in questions:
            ours = pg.catalog.keyword_search("default", question, 5)
            theirs = lite.catalog.keyword_search("default", question, 5)
            assert ours[0][0] == theirs[0][0], question
            assert ours[0][1] == pytest.approx(theirs[0][1], rel=0.05), question  # BM25, same constants
            assert len({c for c, _ in ours} & {c for c, _ in theirs}) >= 3, question
        where = {"$or": [{"uri": "pydoc:global"}, {"uri": {"$in": ["pydoc:nonlocal", "pydoc:del"]}}]}
        ours = pg.catalog.keyword_search("default", "statement names", 10, where)
        theirs = lite.catalog.keyword_search("default", "statement names", 10, where)
        assert ours and {c for c, _ in ours} == {c for c, _ in theirs}


def test_metadata_filters_select_what_the_sqlite_catalog_selects(tmp_path: Path, pg_url: str) -> None:
    write_corpus(tmp_path / "docs")
    with twins(tmp_path, pg_url, **SMALL) as (pg, lite):
        pg.ingest([tmp_path / "docs"])
        lite.ingest([tmp_path / "docs"])
        filters = [{"kind": "pdf"}, {"kind": {"$ne": "pdf"}}, {"page": {"$gt": 1, "$lte": 3}},
                   {"kind": {"$nin": ["pdf", "markdown"]}}, {"kind": {"$in": []}},
                   {"$or": [{"page": 3}, {"kind": "html"}]}, {"$and": [{"kind": "pdf"}, {"page": {"$lt": 3}}]}]
        for where in filters:
            query = "the tyre oil water bread boiler garden manual"
            ours = {c for c, _ in pg.catalog.keyword_search("default", query, 20, where)}
            assert ours == {c for c, _ in lite.catalog.keyword_search("default", query, 20, where)}, where


def test_words_common_in_a_big_knowledge_base_are_left_out_alike(tmp_path: Path, pg_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.knowledge import catalog

    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(40):  # "device" and "power" are in every document, "calibration" in one
        extra = "Calibration needs the blue screwdriver." if i == 7 else "Nothing else to note."
        (docs / f"d{i}.txt").write_text(f"Device manual part {i}. The device powers on. {extra}")
    with twins(tmp_path, pg_url, **SMALL) as (pg, lite):
        pg.ingest([docs])
        lite.ingest([docs])
        for prune_from, matches in ((5000, 40), (10, 1)):  # 10: a big knowledge base, in miniature
            monkeypatch.setattr(catalog, "PRUNE_FROM_CHUNKS", prune_from)
            for base in (pg, lite):
                hits = base.catalog.keyword_search("default", "device power calibration screwdriver", 50)
                assert len(hits) == matches, (type(base.catalog).__name__, prune_from)
                assert base.catalog.chunks_by_id("default", [hits[0][0]])[hits[0][0]]["text"].endswith(
                    "Calibration needs the blue screwdriver.")


# -- keyword search: fast, and the same results -----------------------------------------------------


def assert_counts_match_rows(catalog: PgCatalog) -> None:
    """The word counts keyword search reads (kept by a trigger) are those of the chunk rows."""
    with catalog._engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT kb, lexeme, chunks FROM kb_terms WHERE chunks <> 0").all()
        counted = conn.exec_driver_sql("SELECT kb, lexeme, COUNT(*) FROM kb_chunks,"
                                       " unnest(tsvector_to_array(tsv)) lexeme GROUP BY kb, lexeme").all()
    assert sorted(kept) == sorted(counted)


def exhaustive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make keyword search score every match in one query (no MaxScore): the reference it must equal."""
    monkeypatch.setattr(catalog_pg, "_top", lambda best, df, idf, n: best(catalog_pg._any(list(idf)), []))


QUESTIONS = ["What does the global statement do?", "with statement context manager", "lambda expressions",
             "operator precedence", "nonlocal", "string literal prefixes raw bytes", "comparison chaining",
             "try finally clause", "integer literals underscores", "await expression",
             "How do I write a function that can pause while waiting on the network?",
             "Which attributes tell me the name of a class or the module where a function was defined?",
             "What happens when I put two names separated by a comma on the left of an equals sign?",
             "name binding scope class function module statement expression"]


@pytest.mark.parametrize("prune_from", [5000, 50])  # 50: words in > 10% of chunks are left out, as at 100k
def test_keyword_search_skips_chunks_and_finds_the_top_of_scoring_every_match(
        pg_url: str, prune_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """MaxScore leaves unread the chunks that cannot place; the result is exactly the top of scoring them all."""
    from keel.knowledge import catalog

    monkeypatch.setattr(catalog, "PRUNE_FROM_CHUNKS", prune_from)
    skipped: list[bool] = []  # per search: were the chunks of some word, holding no rarer one, left unread?
    maxscore = catalog_pg._top

    def top(best, df, idf, n):  # type: ignore[no-untyped-def]
        alone: set[str] = set()

        def spy(match: str, seen: list[str]) -> list[tuple[str, float]]:
            if " & " not in match:
                alone.update(w.strip("'") for w in match.split(" | "))
            return best(match, seen)

        hits = maxscore(spy, df, idf, n)
        skipped.append(alone != set(idf))
        return hits

    monkeypatch.setattr(catalog_pg, "_top", top)
    pg = PgCatalog(pg_url)
    try:
        for doc in demo_documents():
            chunks = chunk_document(doc, size=120, overlap=20, count=lambda t: len(t.split()))
            pg.replace_document("default", doc, chunks, [{"uri": doc.uri}] * len(chunks), version="1")
        where = {"uri": {"$in": ["pydoc:global", "pydoc:nonlocal", "pydoc:class", "pydoc:function"]}}
        searches = [(q, n, w) for q in QUESTIONS for n in (1, 5, 50) for w in (None, where)]
        ours = [pg.keyword_search("default", q, n, w) for q, n, w in searches]
        assert all(hits for hits, (_, _, w) in zip(ours, searches, strict=True) if w is None)
        assert sum(skipped) >= 5  # (of 84; most where no word is pruned: 25 of 84)
        exhaustive(monkeypatch)
        assert ours == [pg.keyword_search("default", q, n, w) for q, n, w in searches]
    finally:
        pg.close()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_maxscore_equals_scoring_every_match(data: st.DataObject) -> None:
    """_top against a corpus in memory: any words, frequencies, lengths and n give the exhaustive top n."""
    vocabulary = [f"w{i}" for i in range(data.draw(st.integers(1, 9)))]
    chunks = data.draw(st.lists(st.tuples(
        st.dictionaries(st.sampled_from(vocabulary), st.integers(1, 40), min_size=1),
        st.integers(1, 300)), min_size=1, max_size=60))
    total = len(chunks) + data.draw(st.integers(0, 200))  # the knowledge base has chunks matching no word too
    df = {w: n for w in vocabulary if (n := sum(w in tfs for tfs, _ in chunks))}
    idf = {w: max(1e-6, math.log((total - n + 0.5) / (n + 0.5))) for w, n in df.items()}
    avg = data.draw(st.floats(20, 200))

    def score(tfs: dict[str, int], length: int) -> float:
        return sum(idf[w] * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avg)) for w, tf in tfs.items())

    n = data.draw(st.integers(1, 12))
    calls: list[str] = []

    def best(match: str, seen: list[str]) -> list[tuple[str, float]]:
        """What the database answers (``match`` as _top writes it: ORs of ANDs of quoted words)."""
        calls.append(match)
        sets = [[w.strip("'") for w in part.strip("()").split(" & ")] for part in match.split(" | ")]
        hits = [(f"c{i:03}", score(tfs, length)) for i, (tfs, length) in enumerate(chunks)
                if any(all(w in tfs for w in words) for words in sets) and not any(w in tfs for w in seen)]
        return sorted(hits, key=lambda hit: (-hit[1], hit[0]))[:n]

    expected = best(catalog_pg._any(list(idf)), [])
    calls.clear()
    batch = data.draw(st.sampled_from([0, 5, catalog_pg._BATCH]))  # 0: a query per word (a big knowledge base)
    assert catalog_pg._top(best, df, idf, n, batch) == expected
    assert len(calls) <= len(idf)


def test_a_search_reads_only_its_own_knowledge_base(pg_url: str) -> None:
    """Another knowledge base full of the same words changes nothing in a search's results and scores, and
    the condition the keyword index answers for a search holds for its own knowledge base's chunks only."""
    pg = PgCatalog(pg_url)
    small = Document("mem:small", "Small", [], "", "text")
    texts = ["lanterns light the harbour path", "paper lanterns float on the river", "the harbour at dusk"]
    pg.replace_document("small", small, [Chunk(f"s{i}", small.doc_id, i, t, None, None, 5)
                                         for i, t in enumerate(texts)], [{}] * 3, version="1")
    queries = ["lanterns", "harbour lanterns river", "dusk path"]
    alone = [pg.keyword_search("small", q, 10) for q in queries]
    for d in range(20):  # 600 chunks elsewhere, every one holding the small knowledge base's words
        doc = Document(f"mem:big{d}", f"Big {d}", [], "", "text")
        chunks = [Chunk(f"b{d}-{i}", doc.doc_id, i, f"{texts[i % 3]} and lanterns {i}", None, None, 7)
                  for i in range(30)]
        pg.replace_document("big", doc, chunks, [{}] * 30, version="1")
    statements: list[str] = []

    def record(conn, cursor, statement, *rest):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(pg._engine, "before_cursor_execute", record)
    try:
        assert [pg.keyword_search("small", q, 10) for q in queries] == alone
        assert {c for c, _ in alone[1]} == {"s0", "s1", "s2"}
        assert len(pg.keyword_search("big", "lanterns", 1000)) == 600
        reading = [s for s in statements if "FROM kb_chunks" in s]
        assert reading and all(f"{catalog_pg._SEARCHED} @@" in s for s in reading)
        select = ("SELECT c.id FROM kb_chunks c"
                  f" WHERE {catalog_pg._SEARCHED} @@ (CAST(%(match)s AS tsquery) && {catalog_pg._KB_QUERY})")
        params = {"match": "'lantern' | 'harbour' | 'dusk'", "kb": "small"}
        with pg._engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # as at a size where the planner uses it
            assert sorted(conn.exec_driver_sql(select, params).scalars()) == ["s0", "s1", "s2"]
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + select, params).scalar()
        index_scan = plan[0]["Plan"]["Plans"][0]  # what the index handed over: those three, none of the 600
        assert (index_scan["Index Name"], index_scan["Actual Rows"]) == ("kb_chunks_search", 3)
    finally:
        sa.event.remove(pg._engine, "before_cursor_execute", record)
        pg.close()


# the DDL of the first PostgreSQL catalog (commit 4988ffd), to check that opening one upgrades it
_FIRST_SCHEMA = [
    """CREATE TABLE kb_documents (
        kb TEXT NOT NULL, doc_id TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL,
        content_hash TEXT NOT NULL, pages INTEGER NOT NULL, chunks INTEGER NOT NULL,
        ingested_at DOUBLE PRECISION NOT NULL, metadata JSONB NOT NULL DEFAULT '{}', PRIMARY KEY (kb, doc_id))""",
    """CREATE TABLE kb_chunks (
        kb TEXT NOT NULL, id TEXT NOT NULL, doc_id TEXT NOT NULL, position INTEGER NOT NULL, page INTEGER,
        heading TEXT, text TEXT NOT NULL, indexed TEXT NOT NULL, metadata JSONB NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', indexed)) STORED,
        tokens INTEGER GENERATED ALWAYS AS (array_length(regexp_split_to_array(indexed, '\\W+'), 1)) STORED,
        PRIMARY KEY (kb, id))""",
    "CREATE INDEX kb_chunks_doc ON kb_chunks (kb, doc_id)",
    "CREATE INDEX kb_chunks_tsv ON kb_chunks USING GIN (tsv)",
    """CREATE TABLE kb_pending (kb TEXT NOT NULL, doc_id TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kb, doc_id))""",
    """CREATE TABLE kb_stats (kb TEXT PRIMARY KEY, chunks BIGINT NOT NULL, tokens BIGINT NOT NULL)""",
]


def test_a_catalog_of_the_first_version_is_upgraded_when_opened(pg_url: str) -> None:
    docs = demo_documents()[:25]
    split = {d.doc_id: chunk_document(d, size=120, overlap=20, count=lambda t: len(t.split())) for d in docs}
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # made and written as the first version did
        for statement in _FIRST_SCHEMA:
            conn.exec_driver_sql(statement)
        for doc in docs:
            conn.exec_driver_sql(catalog_pg._INSERT_CHUNK, [  # type: ignore[arg-type]
                ("default", c.id, doc.doc_id, c.position, c.page, c.heading, c.text, c.context_text(doc.title),
                 "{}") for c in split[doc.doc_id]])
            conn.exec_driver_sql(catalog_pg._INSERT_DOCUMENT, ("default", doc.doc_id, doc.uri, doc.title, doc.kind,
                                                              "1", doc.pages, len(split[doc.doc_id]), 0.0, "{}"))
        conn.exec_driver_sql("INSERT INTO kb_pending VALUES ('default', 'pydoc:x', 0)")
        conn.exec_driver_sql("INSERT INTO kb_stats SELECT kb, COUNT(*), SUM(tokens) FROM kb_chunks GROUP BY kb")
        before = conn.exec_driver_sql("SELECT kb, id, tokens, tsv::text FROM kb_chunks ORDER BY id").all()

    def indexes() -> set[str]:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'kb_chunks'"
                                            " AND schemaname = current_schema()").scalars())

    pg = PgCatalog(pg_url)
    try:
        with engine.connect() as conn:  # every row kept, as it was
            assert conn.exec_driver_sql("SELECT kb, id, tokens, tsv::text FROM kb_chunks ORDER BY id").all() == before
        assert indexes() == {"kb_chunks_pkey", "kb_chunks_doc", "kb_chunks_search"}
        assert_counts_match_rows(pg)
        assert sorted(d["doc_id"] for d in pg.documents("default")) == sorted(d.doc_id for d in docs)
        assert pg.pending("default") == ["pydoc:x"]
        for doc in docs:  # the same documents written by this version, in a knowledge base of their own
            pg.replace_document("fresh", doc, split[doc.doc_id], [{}] * len(split[doc.doc_id]), version="1")
        for question in QUESTIONS:
            hits = pg.keyword_search("default", question, 10)
            assert hits == pg.keyword_search("fresh", question, 10), question
        assert sum(bool(pg.keyword_search("default", q, 10)) for q in QUESTIONS) >= 10
        pg.delete_document("default", docs[0].doc_id)  # and it is written to as any other
        assert_counts_match_rows(pg)
        with engine.begin() as conn:  # a replica still on the first version opens it and makes its index again
            conn.exec_driver_sql(_FIRST_SCHEMA[3])
        PgCatalog(pg_url).close()  # the next open of this version drops it; the one after changes nothing
        assert indexes() == {"kb_chunks_pkey", "kb_chunks_doc", "kb_chunks_search"}
        PgCatalog(pg_url).close()
        assert_counts_match_rows(pg)
    finally:
        pg.close()
        engine.dispose()


def test_word_counts_follow_every_write_and_a_rebuild(pg_url: str) -> None:
    """Inserts, deletes, replaces and even a hand-made UPDATE of a chunk row keep kb_terms right."""
    pg = PgCatalog(pg_url)
    try:
        for name in ("a", "b"):
            for d in range(3):
                doc = Document(f"mem:{d}", f"Doc {d}", [], "", "text")
                pg.replace_document(name, doc, [Chunk(f"{d}-{i}", doc.doc_id, i, f"lantern {d} wick {i} oil", None,
                                                      None, 4) for i in range(d + 2)], [{}] * (d + 2), version="1")
        assert_counts_match_rows(pg)
        doc = Document("mem:1", "Doc 1", [], "", "text")
        pg.replace_document("a", doc, [Chunk("x", doc.doc_id, 0, "candle", None, None, 1)], [{}], version="2")
        pg.delete_document("b", "mem:2")
        with pg._engine.begin() as conn:
            conn.exec_driver_sql("UPDATE kb_chunks SET indexed = 'glass chimney' WHERE kb = 'a' AND id = '0-0'")
        assert_counts_match_rows(pg)
        assert pg.keyword_search("a", "chimney", 5) and not pg.keyword_search("b", "chimney", 5)
        with pg._engine.begin() as conn:  # drift made by hand is undone by a rebuild
            conn.exec_driver_sql("UPDATE kb_terms SET chunks = chunks + 7")
        pg.rebuild_keyword_index()
        assert_counts_match_rows(pg)
    finally:
        pg.close()


# -- replicas and concurrency ---------------------------------------------------------------------


def test_two_replicas_share_one_catalog(tmp_path: Path, pg_url: str, chroma_port: int) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    write_corpus(tmp_path / "docs")
    a = replica(pg_url, chroma_port, tmp_path / "replica-a")
    b = replica(pg_url, chroma_port, tmp_path / "replica-b")
    try:
        assert a.ingest([tmp_path / "docs"], kb=name).documents == 4
        assert [d["title"] for d in b.documents(name)] == ["Car Manual", "Garden", "Kitchen", "notes"]
        hit = b.search("tyre pressure bar", kb=name, k=1)[0]
        assert (hit.title, hit.page, hit.metadata["vector_rank"], hit.metadata["keyword_rank"]) == (
            "Car Manual", 2, 1, 1)
        again = b.ingest([tmp_path / "docs"], kb=name)  # what A stored is current for B too
        assert (again.documents, again.unchanged, again.embedded) == (0, 4, 0)
        b.delete_doc(str(tmp_path / "docs/car.pdf"), kb=name)
        assert all(h.title != "Car Manual" for h in a.search("tyre pressure", kb=name, k=10))
        assert [d["title"] for d in a.documents(name)] == ["Garden", "Kitchen", "notes"]
        assert_consistent(a, name)
    finally:
        a.close()
        b.close()


def test_two_replicas_ingesting_the_same_documents_at_once(tmp_path: Path, pg_url: str, chroma_port: int) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"d{i}.md").write_text(f"# Part {i}\n\n" + " ".join(f"Sentence {j} on widget{i}." for j in range(40)))
    replicas = [replica(pg_url, chroma_port, tmp_path / f"replica-{r}") for r in "ab"]
    reports: list[IngestReport] = []
    start = threading.Barrier(2)

    def ingest(base: KnowledgeBase) -> None:
        start.wait()
        reports.append(base.ingest([docs], kb=name))

    threads = [threading.Thread(target=ingest, args=(base,)) for base in replicas]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(reports) == 2, "an ingest failed"
        # each document was stored exactly once; the other replica waited for it, then found it current
        assert sum(r.documents for r in reports) == 12 and sum(r.unchanged for r in reports) == 12
        for base in replicas:
            assert len(base.documents(name)) == 12
            assert_consistent(base, name)
        assert replicas[1].search("widget7", kb=name, k=1, mode="keyword")[0].title == "Part 7"
    finally:
        for base in replicas:
            base.close()


def _chunks(doc_id: str, tag: str, n: int) -> list[Chunk]:
    return [Chunk(f"{tag}{i}", doc_id, i, f"{tag} text {i} about lanterns", None, None, 5) for i in range(n)]


def test_concurrent_replace_of_one_document_is_atomic(pg_url: str) -> None:
    """Two writers replace one document over and over while a reader looks: it only ever sees one
    whole version, and the document row, chunk rows and totals always agree."""
    doc = Document("mem:lantern", "Lantern", [], "", "text")
    versions = {"a": _chunks(doc.doc_id, "a", 3), "b": _chunks(doc.doc_id, "b", 5)}
    writers = [PgCatalog(pg_url) for _ in versions]
    reader = PgCatalog(pg_url)
    errors: list[BaseException] = []
    seen: set[frozenset[str]] = set()
    done = threading.Event()

    def write(catalog: PgCatalog, tag: str) -> None:
        try:
            for _ in range(25):
                catalog.replace_document("default", doc, versions[tag], [{"v": tag}] * len(versions[tag]),
                                         version=tag)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                ids = frozenset(reader.chunk_ids("default", doc.doc_id))
                if ids:
                    seen.add(ids)
                seen.add(frozenset(c for c, _ in reader.keyword_search("default", "lanterns", 20)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c, tag)) for c, tag in zip(writers, versions, strict=True)]
    watcher = threading.Thread(target=read)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    watcher.join(timeout=30)
    try:
        assert errors == []
        assert seen - {frozenset()} <= {frozenset(c.id for c in v) for v in versions.values()}
        final = reader.content_hash("default", doc.doc_id)
        assert final in versions
        assert reader.chunk_ids("default", doc.doc_id) == {c.id for c in versions[final]}
        assert reader.documents("default")[0]["chunks"] == reader.count_chunks("default") == len(versions[final])
        assert reader.kbs() == [{"kb": "default", "documents": 1, "chunks": len(versions[final]), "pages": 0}]
        with reader._engine.connect() as conn:  # the totals BM25 reads were kept in step by every write
            assert conn.exec_driver_sql("SELECT kb, chunks FROM kb_stats").all() == [("default", len(versions[final]))]
        assert_counts_match_rows(reader)
    finally:
        for catalog in (*writers, reader):
            catalog.close()


def test_recovery_leaves_a_document_whose_writer_is_at_work(kb: KnowledgeBase, tmp_path: Path) -> None:
    """Another replica's ingest in flight: its vectors are written, its catalog swap is not yet."""
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    notes = next(d["doc_id"] for d in kb.documents() if d["title"] == "notes")
    in_flight = {f"{notes}-new:0"}
    collection = kb._collection("default")
    with kb.catalog.document_lock("default", notes):  # held by "the other replica"
        kb.catalog.mark_pending("default", notes)
        kb.vectors.upsert(collection, sorted(in_flight), HashEmbedder().embed_windows(["new"])[0],
                          [{"doc_id": notes, "window": 0}], [None])
        assert kb.ingest([tmp_path / "docs/garden.md"]).unchanged == 1  # runs recovery first
        assert in_flight <= vector_ids(kb) and kb.catalog.pending("default") == [notes]
    kb.ingest([tmp_path / "docs/garden.md"])  # its writer is gone: now recovered
    assert kb.catalog.pending("default") == [] and not in_flight & vector_ids(kb)
    assert_consistent(kb)


_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from keel.config import KnowledgeSettings
    from keel.knowledge import KnowledgeBase
    from keel.knowledge.testing import HashEmbedder

    class Slow(HashEmbedder):
        def embed_windows(self, texts):
            time.sleep(0.2)
            return super().embed_windows(texts)

    kb = KnowledgeBase(KnowledgeSettings(catalog_url=sys.argv[3], chunk_tokens=60, chunk_overlap=10),
                       Path(sys.argv[1]), embedder=Slow())
    print("ready", flush=True)
    kb.ingest([Path(sys.argv[2])])
""")


def test_a_writer_killed_mid_ingest_is_recovered_by_the_next(tmp_path: Path, pg_url: str, spawn) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"d{i:02}.txt").write_text(f"Record {i} mentions gadget{i} and nothing else.")
    proc = spawn([sys.executable, "-c", _KILLED, str(tmp_path / "home"), str(docs), pg_url], tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    probe = PgCatalog(pg_url)
    deadline = time.monotonic() + 60
    while len(probe.documents("default")) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup runs; PostgreSQL ends its sessions and their locks
    proc.wait(timeout=30)
    probe.close()
    with KnowledgeBase(KnowledgeSettings(catalog_url=pg_url, **SMALL), tmp_path / "home",
                       embedder=HashEmbedder()) as kb:
        stored = len(kb.documents())
        assert 3 <= stored < 30
        report = kb.ingest([docs])
        assert (report.documents, report.unchanged) == (30 - stored, stored)
        assert_consistent(kb)


# -- where the catalog lives ----------------------------------------------------------------------


def test_catalog_url_follows_the_shared_database_only_with_a_shared_vector_store(tmp_path: Path) -> None:
    pg = "postgresql+psycopg://keel@db:5432/keel"
    server = {"store": "server"}
    assert catalog_url(load_settings(telemetry={"database_url": pg})) is None  # embedded vectors: local catalog
    assert catalog_url(load_settings(knowledge=server, telemetry={"database_url": pg})) == pg
    assert catalog_url(load_settings(knowledge=server, state={"database_url": pg})) == pg
    assert catalog_url(load_settings(knowledge=server, telemetry={"database_url": "sqlite:///t.db"})) is None
    assert catalog_url(load_settings(knowledge=server, state={"database_url": "sqlite:///s.db"},
                                     telemetry={"database_url": pg})) is None
    own = "postgresql+psycopg://keel@catalog:5432/kb"
    assert catalog_url(load_settings(knowledge={**server, "catalog_url": own}, telemetry={"database_url": pg})) == own
    with pytest.raises(ConfigError, match="telemetry.database_url"):
        catalog_url(load_settings(knowledge=server, telemetry={"database_url": "mysql://x@y/z"}))
    app = App(knowledge={"catalog_url": f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"})
    assert isinstance(app.knowledge.catalog, Catalog) and (tmp_path / "elsewhere.sqlite3").is_file()
    app.knowledge.close()


def test_a_sqlite_catalog_is_copied_in_when_the_postgres_one_is_created(tmp_path: Path, pg_url: str) -> None:
    write_corpus(tmp_path / "docs")
    home = tmp_path / "home"
    with KnowledgeBase(KnowledgeSettings(**SMALL), home, embedder=HashEmbedder()) as before:
        before.ingest([tmp_path / "docs"])
        titles = [d["title"] for d in before.documents()]
    with KnowledgeBase(KnowledgeSettings(catalog_url=pg_url, **SMALL), home, embedder=HashEmbedder()) as kb:
        assert kb.catalog.imported == 4  # type: ignore[attr-defined]
        assert [d["title"] for d in kb.documents()] == titles
        assert kb.search("tyre pressure bar", k=1)[0].page == 2
        assert kb.ingest([tmp_path / "docs"]).unchanged == 4  # content hashes came along: nothing re-embedded
        assert_consistent(kb)
        kb.delete_doc(str(tmp_path / "docs/car.pdf"))
    with KnowledgeBase(KnowledgeSettings(catalog_url=pg_url, **SMALL), home, embedder=HashEmbedder()) as kb:
        assert kb.catalog.imported == 0 and len(kb.documents()) == 3  # type: ignore[attr-defined]  # copied once
    assert (home / "kb" / "catalog.sqlite3").is_file()  # the file is kept as it was


# -- unhappy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "is not a database URL"),
    ("mysql://keel@127.0.0.1/keel", "uses 'mysql'"),
    ("postgresql+psycopg2://keel@127.0.0.1/keel", "driver 'postgresql\\+psycopg2'"),
    ("sqlite://", "must name a SQLite file"),
])
def test_a_bad_catalog_url_is_a_config_error(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        KnowledgeBase(KnowledgeSettings(catalog_url=url), tmp_path / "home", embedder=HashEmbedder())
    assert err.value.hint and ("postgresql+psycopg://" in err.value.hint or "sqlite:" in err.value.hint)


def test_an_unreachable_server_is_a_retrieval_error_and_loses_nothing(
        kb: KnowledgeBase, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"postgresql+psycopg://keel:secret@127.0.0.1:{free_port()}/keel"
    with pytest.raises(RetrievalError, match="cannot be opened") as err:
        KnowledgeBase(KnowledgeSettings(catalog_url=dead), tmp_path / "other", embedder=HashEmbedder())
    assert "secret" not in str(err.value) and "knowledge.catalog_url" in (err.value.hint or "")
    assert err.value.exit_code == 6 and err.value.http_status == 503
    # the embedded store's lock was let go: the same data dir opens again
    KnowledgeBase(KnowledgeSettings(), tmp_path / "other", embedder=HashEmbedder()).close()

    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    (tmp_path / "docs/notes.txt").write_text("Solar panels are cleaned each spring.")
    from keel.knowledge.catalog_pg import _engine

    monkeypatch.setattr(kb.catalog, "_engine", _engine(dead))  # the server goes away
    for call in (lambda: kb.ingest([tmp_path / "docs"]), lambda: kb.search("boiler"), kb.list_kbs):
        with pytest.raises(RetrievalError, match="knowledge base catalog"):
            call()
    monkeypatch.undo()  # and comes back: everything stored before is there, and the change goes in
    assert kb.search("boiler plumber", k=1)[0].title == "notes"
    assert kb.ingest([tmp_path / "docs"]).documents == 1
    assert kb.search("solar panels", k=1, mode="keyword")[0].title == "notes"
    assert_consistent(kb)


def test_without_psycopg_the_hint_names_the_extra(tmp_path: Path, pg_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependency, match="psycopg") as err:
        PgCatalog(pg_url)
    assert err.value.hint == 'pip install "keel[scale]"'
