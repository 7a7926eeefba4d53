"""Chunking: token budget, overlap, sentence boundaries, headings, stable ids."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from keel.knowledge.chunking import chunk_document, split_units
from keel.knowledge.loaders import Block, Document


def words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def doc(*blocks: Block, uri: str = "mem:doc") -> Document:
    return Document(uri, "Doc", list(blocks), "hash")


def sentences(n: int, length: int = 12) -> str:
    return " ".join(f"Sentence {i} " + " ".join(f"w{i}x{j}" for j in range(length - 3)) + " end." for i in range(n))


def test_chunks_stay_within_the_budget_and_cut_at_sentences() -> None:
    chunks = chunk_document(doc(Block(sentences(40))), size=60, overlap=0, count=words)
    assert len(chunks) > 5
    for c in chunks:
        assert c.tokens <= 60 and words(c.text) == c.tokens
        assert c.text.startswith("Sentence") and c.text.endswith("end.")
    # nothing lost, nothing repeated without overlap
    assert " ".join(c.text for c in chunks) == sentences(40)


def test_overlap_repeats_whole_trailing_sentences() -> None:
    chunks = chunk_document(doc(Block(sentences(40))), size=60, overlap=25, count=words)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        units = [u for u, _ in split_units(nxt.text)]
        n = max(i for i in range(len(units) + 1) if prev.text.endswith(" ".join(units[:i])))
        assert n == 2  # two 12-word sentences fit in 25 tokens of overlap, three would not
        assert prev.text.endswith(" ".join(units[:n]))


def test_paragraphs_are_kept_apart() -> None:
    units = split_units("First para one. First para two.\n\nSecond para.")
    assert units == [("First para one.", True), ("First para two.", False), ("Second para.", True)]


def test_a_sentence_longer_than_a_chunk_is_split_on_words() -> None:
    long = " ".join(f"t{i}" for i in range(250))
    chunks = chunk_document(doc(Block(long)), size=100, overlap=10, count=words)
    assert [c.tokens for c in chunks] == [100, 100, 50]
    assert " ".join(c.text for c in chunks) == long


def test_chunks_never_span_pages_and_keep_heading() -> None:
    d = doc(Block("Page one text.", page=1, heading="Intro"), Block("Page two text.", page=2, heading="Setup"))
    chunks = chunk_document(d, size=500, overlap=50, count=words)
    assert [(c.page, c.heading, c.position) for c in chunks] == [(1, "Intro", 0), (2, "Setup", 1)]
    assert chunks[1].context_text("Manual") == "Manual › Setup\nPage two text."


def test_ids_are_stable_and_depend_on_content_and_position() -> None:
    d = doc(Block(sentences(10)))
    a = chunk_document(d, size=40, overlap=5, count=words)
    b = chunk_document(d, size=40, overlap=5, count=words)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    changed = chunk_document(doc(Block(sentences(10) + " Extra.")), size=40, overlap=5, count=words)
    assert [c.id for c in changed][:-1] == [c.id for c in a][:-1]
    assert changed[-1].id != a[-1].id


@pytest.fixture(scope="module")
def minilm_count() -> Callable[[str], int]:
    from keel.knowledge.minilm import MiniLM

    return MiniLM().count_tokens


@pytest.mark.parametrize("size,overlap", [(500, 50), (200, 20), (64, 0)])
def test_real_tokenizer_budget(size: int, overlap: int, minilm_count: Callable[[str], int]) -> None:
    from keel.knowledge.demo import demo_documents

    d = next(x for x in demo_documents() if x.uri == "pydoc:typesseq")
    chunks = chunk_document(d, size=size, overlap=overlap, count=minilm_count)
    assert all(minilm_count(c.text) <= size + 2 for c in chunks)  # +2: joining spaces may merge a piece
    assert max(c.tokens for c in chunks) > size * 0.6  # chunks are filled, not one sentence each
