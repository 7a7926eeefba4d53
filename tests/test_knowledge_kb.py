"""The knowledge base end to end: ingest, idempotency, replace, delete, filters, named KBs, bad input.

Plumbing tests use the shipped HashEmbedder (no model); retrieval quality tests use the real MiniLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from keel import App
from keel.config import KnowledgeSettings
from keel.errors import InputError, NotFound
from keel.knowledge import KnowledgeBase
from keel.knowledge.testing import HashEmbedder, write_pdf


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    base = KnowledgeBase(KnowledgeSettings(chunk_tokens=60, chunk_overlap=10), tmp_path / "home",
                         embedder=HashEmbedder())
    yield base
    base.close()


def vector_ids(base: KnowledgeBase, kb: str = "default") -> set[str]:
    col = base._collection(kb)
    return set(base.vectors._collection(col).get(include=[])["ids"])


def catalog_chunk_ids(base: KnowledgeBase, kb: str = "default") -> set[str]:
    """Through the catalog's interface, so these tests run on the PostgreSQL catalog too (test_catalog_pg.py)."""
    return {c for d in base.documents(kb) for c in base.catalog.chunk_ids(kb, d["doc_id"])}


def assert_consistent(base: KnowledgeBase, kb: str = "default") -> None:
    """Every catalogued chunk has its vectors, every vector belongs to a catalogued chunk, and no chunk
    row is outside its document's count."""
    chunks = catalog_chunk_ids(base, kb)
    owners = {rid.rsplit(":", 1)[0] for rid in vector_ids(base, kb)}
    assert owners == chunks
    assert base.catalog.count_chunks(kb) == len(chunks) == sum(d["chunks"] for d in base.documents(kb))


def write_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun and weekly watering.\n\n"
                                      "## Pests\n\nAphids are washed off with soapy water.\n")
    (folder / "kitchen.html").write_text("<title>Kitchen</title><h1>Bread</h1><p>Knead the dough for ten "
                                         "minutes, then let it rise for an hour.</p>")
    (folder / "notes.txt").write_text("The boiler service is due every October. Call the plumber early.")
    write_pdf(folder / "car.pdf", ["Owner manual cover.", "Tyre pressure is 2.4 bar at the front.",
                                   "Change the oil every 15000 km."], title="Car Manual")


def test_ingest_then_search_finds_the_page(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    report = kb.ingest([tmp_path / "docs"])
    assert (report.documents, report.unchanged, report.pages, report.failed) == (4, 0, 3, [])
    assert report.chunks == 7  # 3 pdf pages, 2 markdown sections, 1 html section, 1 text file
    hits = kb.search("tyre pressure bar", k=3)
    assert hits[0].title == "Car Manual" and hits[0].page == 2
    assert hits[0].to_source() == {"id": hits[0].id, "title": "Car Manual", "uri": str(tmp_path / "docs/car.pdf"),
                                   "page": 2, "score": 1.0, "text": "Tyre pressure is 2.4 bar at the front."}
    assert hits[0].metadata["vector_rank"] == 1 and hits[0].metadata["keyword_rank"] == 1
    assert_consistent(kb)


def test_same_documents_twice_add_nothing(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    before = (vector_ids(kb), catalog_chunk_ids(kb), kb.embedder.calls)  # type: ignore[attr-defined]
    again = kb.ingest([tmp_path / "docs"])
    assert (again.documents, again.unchanged, again.chunks, again.embedded) == (0, 4, 0, 0)
    assert (vector_ids(kb), catalog_chunk_ids(kb), kb.embedder.calls) == before  # type: ignore[attr-defined]


def test_changed_document_replaces_its_chunks(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    (tmp_path / "docs/notes.txt").write_text("The boiler was replaced by a heat pump in 2025.")
    report = kb.ingest([tmp_path / "docs"])
    assert (report.documents, report.unchanged) == (1, 3)
    texts = [h.text for h in kb.search("boiler", k=10, mode="keyword")]
    assert texts == ["The boiler was replaced by a heat pump in 2025."]
    assert_consistent(kb)


def test_bad_files_are_reported_and_the_rest_ingested(kb: KnowledgeBase, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs)
    kb.ingest([docs])
    stored = catalog_chunk_ids(kb)
    bad = tmp_path / "bad"
    bad.mkdir()
    writer = PdfWriter(clone_from=PdfReader(write_pdf(tmp_path / "plain.pdf", ["secret"])))
    writer.encrypt("pw")
    writer.write(bad / "encrypted.pdf")
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7 this is not really a pdf")
    write_pdf(bad / "empty.pdf", [""])
    (bad / "blob.txt").write_bytes(bytes(range(256)) * 4)
    (bad / "huge.md").write_text("lots of words " * 100_000)
    (bad / "table.xlsx").write_bytes(b"PK\x03\x04")
    (bad / "good.md").write_text("# Lamp\n\nThe desk lamp takes an E14 bulb.")
    small = KnowledgeBase(KnowledgeSettings(chunk_tokens=60, chunk_overlap=10, max_file_mb=1), tmp_path / "home",
                          embedder=kb.embedder)
    report = small.ingest([bad, tmp_path / "missing.md"])
    failed = {Path(f.path).name: f.message for f in report.failed}
    assert set(failed) == {"encrypted.pdf", "corrupt.pdf", "empty.pdf", "blob.txt", "huge.md", "table.xlsx",
                           "missing.md"}
    assert "encrypted" in failed["encrypted.pdf"] and "not a readable PDF" in failed["corrupt.pdf"]
    assert "no extractable text" in failed["empty.pdf"] and "binary" in failed["blob.txt"]
    assert "limit" in failed["huge.md"] and "unsupported" in failed["table.xlsx"]
    assert (report.documents, report.ok) == (1, False)
    assert stored < catalog_chunk_ids(kb)  # nothing already stored was lost
    assert small.search("light bulb for the desk lamp", k=1)[0].title == "Lamp"


def test_delete_doc_removes_chunks_and_vectors(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    deleted = kb.delete_doc(str(tmp_path / "docs/car.pdf"))
    assert len(deleted) == 1
    assert all(h.title != "Car Manual" for h in kb.search("tyre pressure oil", k=10))
    assert [d["title"] for d in kb.documents()] == ["Garden", "Kitchen", "notes"]
    assert_consistent(kb)
    with pytest.raises(NotFound, match="no document 'nope'"):
        kb.delete_doc("nope")


def test_named_knowledge_bases_are_separate(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs/garden.md"], kb="home")
    kb.ingest([tmp_path / "docs/car.pdf"], kb="car")
    assert [h.title for h in kb.search("tomatoes sun", kb="car", k=5)] == ["Car Manual"] * 3
    assert {h.title for h in kb.search("tomatoes sun", kb="home", k=5)} == {"Garden"}
    assert kb.search("anything", kb="empty") == []
    assert [(r["kb"], r["documents"]) for r in kb.list_kbs()] == [("car", 1), ("home", 1)]


def test_metadata_filters_apply_to_both_sides(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    for mode in ("hybrid", "vector", "keyword"):
        hits = kb.search("oil tyre pressure manual", k=5, where={"kind": "pdf", "page": {"$gte": 2}}, mode=mode)
        assert {h.page for h in hits} <= {2, 3} and hits, mode
        assert all(h.metadata["kind"] == "pdf" for h in hits)
    only_md = kb.search("water", k=5, where={"kind": {"$in": ["markdown"]}})
    assert {h.title for h in only_md} == {"Garden"}
    with pytest.raises(InputError, match="unknown filter operator"):
        kb.search("water", where={"kind": {"$regex": "x"}}, mode="keyword")


def test_keyword_index_is_rebuilt_from_the_chunks(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    fts = kb.catalog._fts("default")
    kb.catalog._db.execute(f"INSERT INTO {fts}({fts}) VALUES ('delete-all')")
    assert kb.search("plumber October", mode="keyword") == []
    kb.rebuild_keyword_index()
    assert kb.search("plumber October", mode="keyword")[0].title == "notes"


def test_crash_between_vectors_and_catalog_is_recovered(kb: KnowledgeBase, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    (tmp_path / "docs/notes.txt").write_text("Solar panels are cleaned each spring.")

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if Ctrl-C landed right after the vectors were written

    monkeypatch.setattr(kb.catalog, "replace_document", crash)
    with pytest.raises(KeyboardInterrupt):
        kb.ingest([tmp_path / "docs/notes.txt"])
    monkeypatch.undo()
    # the new vectors exist, but no search shows them: the catalog still holds the old version
    assert [h.text for h in kb.search("solar panels spring", k=10) if "Solar" in h.text] == []
    assert kb.search("boiler plumber", k=1)[0].title == "notes"
    report = kb.ingest([tmp_path / "docs"])
    assert (report.documents, report.unchanged) == (1, 3)
    assert kb.search("solar panels spring", k=1)[0].text == "Solar panels are cleaned each spring."
    assert kb.catalog.pending("default") == []
    assert_consistent(kb)


def test_empty_query_and_bad_k(kb: KnowledgeBase) -> None:
    with pytest.raises(InputError, match="empty"):
        kb.search("   ")
    with pytest.raises(InputError, match="k must be at least 1"):
        kb.search("x", k=0)


def test_long_chunk_gets_several_vectors(tmp_path: Path) -> None:
    base = KnowledgeBase(KnowledgeSettings(), tmp_path / "home", embedder=HashEmbedder(window_tokens=100))
    text = " ".join(f"filler{i}." for i in range(400)) + " The secret ingredient is cardamom."
    (tmp_path / "long.txt").write_text(text)
    report = base.ingest([tmp_path / "long.txt"])
    assert report.chunks == 1
    ids = vector_ids(base)
    assert len(ids) == 5  # 405 words, windows of 100: the tail has its own vector
    hit = base.search("cardamom ingredient", k=1, mode="vector")[0]
    assert hit.metadata["vector_rank"] == 1 and "cardamom" in hit.text
    base.close()


# -- with the real model ------------------------------------------------------------------------


def test_app_ingest_and_search_with_the_real_model(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "handbook.pdf", [
        "Welcome to the company handbook. This manual explains our policies.",
        "Annual leave: every employee receives 25 days of paid holiday per calendar year. Unused days "
        "may be carried over until March.",
        "Expenses: submit receipts within 30 days through the finance portal. Travel is reimbursed at cost.",
        "Security: lock your screen when you leave your desk. Report lost badges to reception at once.",
    ], title="Company Handbook")
    app = App()
    report = app.ingest([pdf])
    assert (report.documents, report.pages, report.chunks) == (1, 4, 4)
    questions = {"how many vacation days do I get each year": 2,
                 "how do I get my money back for a business trip": 3,
                 "what should I do if I misplace my access card": 4}
    for question, page in questions.items():
        hits = app.search(question, k=3)
        assert hits[0].page == page, (question, [(h.page, h.score) for h in hits])
        assert hits[0].uri == str(pdf) and hits[0].title == "Company Handbook"
    again = app.ingest([pdf])
    assert (again.documents, again.unchanged, again.embedded) == (0, 1, 0)
    app.knowledge.close()


def test_keyword_query_leaves_out_words_common_in_the_kb(kb: KnowledgeBase, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.knowledge import catalog

    monkeypatch.setattr(catalog, "PRUNE_FROM_CHUNKS", 10)  # a big knowledge base, in miniature
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(40):  # "device" is in every document, "calibration" in one
        extra = "Calibration needs the blue screwdriver." if i == 7 else "Nothing else to note."
        (docs / f"d{i}.txt").write_text(f"Device manual part {i}. The device powers on. {extra}")
    kb.ingest([docs])
    fts = kb.catalog._fts("default")
    assert fts is not None
    assert kb.catalog._query_words("default", fts, "how to do device calibration with screwdriver") == [
        "calibration", "screwdriver"]
    # a word in no chunk cannot match: it does not take one of the two places
    assert kb.catalog._query_words("default", fts, "device zyzzyva calibration") == ["calibration", "device"]
    assert kb.catalog._query_words("default", fts, "device power") == ["device", "power"]  # two: all kept
    monkeypatch.setattr(catalog, "PRUNE_FROM_CHUNKS", 5000)
    assert kb.catalog._query_words("default", fts, "device power part") == ["device", "power", "part"]
    hits = kb.search("device calibration screwdriver", k=1, mode="keyword")
    assert hits[0].text.endswith("Calibration needs the blue screwdriver.")


def test_catalog_is_rebuilt_from_the_vector_store(kb: KnowledgeBase, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    before = kb.search("tyre pressure", k=3)
    kb.catalog._db.execute("DELETE FROM documents")
    kb.catalog._db.execute("DELETE FROM chunks")
    kb.rebuild_keyword_index()
    assert kb.search("tyre pressure", k=3) == []  # the catalog is gone: nothing is searchable
    assert kb.rebuild_catalog() == 4
    after = kb.search("tyre pressure", k=3)
    assert [(h.id, h.title, h.uri, h.page, h.text) for h in after] == [
        (h.id, h.title, h.uri, h.page, h.text) for h in before]
    assert sorted(d["title"] for d in kb.documents()) == ["Car Manual", "Garden", "Kitchen", "notes"]
    assert_consistent(kb)
    # restored documents are re-checked by the next ingest; their vectors come from the cache
    assert kb.ingest([tmp_path / "docs"]).documents == 4
    assert_consistent(kb)


def test_searches_from_many_threads_while_ingesting(kb: KnowledgeBase, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    write_corpus(tmp_path / "docs")
    kb.ingest([tmp_path / "docs"])
    more = tmp_path / "more"
    more.mkdir()
    for i in range(30):
        (more / f"n{i}.md").write_text(f"# Note {i}\n\nReminder number {i} about the garden hose and tomatoes.")

    def search(i: int) -> int:
        return len(kb.search("tomatoes sun watering", k=5, mode=("hybrid", "keyword", "vector")[i % 3]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        ingest = pool.submit(kb.ingest, [more])
        counts = list(pool.map(search, range(60)))
        assert ingest.result().documents == 30
    assert all(c >= 1 for c in counts)
    assert_consistent(kb)
    assert len(kb.documents()) == 34
