"""Loaders: every supported type read right, every bad input a clear error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from keel.errors import InputError
from keel.knowledge.demo import demo_documents
from keel.knowledge.loaders import iter_files, load_file
from keel.knowledge.testing import write_pdf

MB = 1_000_000


def test_pdf_keeps_one_based_pages_and_title(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "manual.pdf", ["Intro page.", "Second page text.", "Third page: invoices."],
                    title="Widget Manual")
    doc = load_file(pdf, max_bytes=MB)
    assert (doc.kind, doc.title, doc.pages) == ("pdf", "Widget Manual", 3)
    assert [(b.page, b.text.strip()) for b in doc.blocks] == [
        (1, "Intro page."), (2, "Second page text."), (3, "Third page: invoices.")]


def test_pdf_without_title_uses_file_name(tmp_path: Path) -> None:
    assert load_file(write_pdf(tmp_path / "notes.pdf", ["x y z"]), max_bytes=MB).title == "notes"


def test_encrypted_pdf_is_refused_with_what_to_do(tmp_path: Path) -> None:
    plain = write_pdf(tmp_path / "plain.pdf", ["secret text"])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt("hunter2")
    writer.write(tmp_path / "locked.pdf")
    with pytest.raises(InputError, match="locked.pdf: the PDF is encrypted") as err:
        load_file(tmp_path / "locked.pdf", max_bytes=MB)
    assert "decrypt" in (err.value.hint or "")


def test_pdf_encrypted_without_user_password_is_read(tmp_path: Path) -> None:
    plain = write_pdf(tmp_path / "plain.pdf", ["owner-only protection"])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="", owner_password="owner")
    writer.write(tmp_path / "owner.pdf")
    assert "owner-only" in load_file(tmp_path / "owner.pdf", max_bytes=MB).blocks[0].text


@pytest.mark.parametrize("content", [b"%PDF-1.4\n garbage \x00\x01 no xref", b"not a pdf at all",
                                     b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"])
def test_corrupt_pdf_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "broken.pdf").write_bytes(content)
    with pytest.raises(InputError, match="broken.pdf: (not a readable PDF|the PDF has no extractable text)"):
        load_file(tmp_path / "broken.pdf", max_bytes=MB)


def test_truncated_pdf_is_refused(tmp_path: Path) -> None:
    whole = write_pdf(tmp_path / "whole.pdf", ["page one " * 50, "page two " * 50]).read_bytes()
    (tmp_path / "cut.pdf").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InputError, match="cut.pdf"):
        load_file(tmp_path / "cut.pdf", max_bytes=MB)


def test_pdf_with_no_text_says_it_needs_ocr(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "scan.pdf", ["", ""])
    with pytest.raises(InputError, match=r"scan.pdf: the PDF has no extractable text \(2 pages\)") as err:
        load_file(pdf, max_bytes=MB)
    assert "OCR" in (err.value.hint or "")


def test_zero_byte_pdf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(InputError, match="empty.pdf: not a readable PDF"):
        load_file(tmp_path / "empty.pdf", max_bytes=MB)


def test_binary_file_with_text_suffix(tmp_path: Path) -> None:
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(InputError, match="image.txt: looks like a binary file"):
        load_file(tmp_path / "image.txt", max_bytes=MB)


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("word " * 300_000)
    with pytest.raises(InputError, match=r"big.txt: 1.5 MB is over the 1 MB limit") as err:
        load_file(tmp_path / "big.txt", max_bytes=MB)
    assert "max_file_mb" in (err.value.hint or "")


@pytest.mark.parametrize("name", ["photo.jpg", "archive.zip", "Makefile"])
def test_unknown_type(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"whatever")
    with pytest.raises(InputError, match="unsupported file type"):
        load_file(tmp_path / name, max_bytes=MB)


def test_empty_text_file(tmp_path: Path) -> None:
    (tmp_path / "blank.md").write_text("\n\n   \n")
    with pytest.raises(InputError, match="blank.md: the file has no text"):
        load_file(tmp_path / "blank.md", max_bytes=MB)


def test_markdown_sections_keep_their_heading(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# Guide\n\nIntro.\n\n## Install\n\nRun the installer.\n\n## Use\n\nClick go.\n")
    doc = load_file(tmp_path / "guide.md", max_bytes=MB)
    assert doc.title == "Guide"
    assert [(b.heading, b.text.split("\n")[-1]) for b in doc.blocks] == [
        ("Guide", "Intro."), ("Install", "Run the installer."), ("Use", "Click go.")]


def test_html_keeps_readable_text_only(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>Billing FAQ</title><style>p{color:red}</style><script>track()</script></head>"
        "<body><nav>Home | About</nav><h1>Invoices</h1><p>Invoices are sent &amp; paid monthly.</p>"
        "<h2>Refunds</h2><p>Refunds take <b>5</b> days.</p><footer>(c) corp</footer></body></html>")
    doc = load_file(tmp_path / "page.html", max_bytes=MB)
    text = "\n".join(b.text for b in doc.blocks)
    assert doc.title == "Billing FAQ"
    assert "Invoices are sent & paid monthly." in text and "Refunds take 5 days." in text
    for junk in ("track()", "color:red", "Home | About", "(c) corp"):
        assert junk not in text
    assert [b.heading for b in doc.blocks] == ["Invoices", "Refunds"]


def test_folder_walk_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b.md", "a/c.txt", ".git/config", "a/.hidden.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)] == ["a/c.txt", "b.md"]


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_file(tmp_path / "nope.md", max_bytes=MB)


def test_demo_corpus_is_one_document_per_topic() -> None:
    from pydoc_data.topics import topics

    docs = demo_documents()
    assert len(docs) == len(topics)
    by_uri = {d.uri: d for d in docs}
    assert by_uri["pydoc:assert"].title == 'The "assert" statement'
    assert by_uri["pydoc:assert"].metadata == {"topic": "assert"}
    assert all(d.blocks and d.title for d in docs)
    # sub-headings become section headings
    assert any(b.heading == "Coroutine function definition" for b in by_uri["pydoc:async"].blocks)


def test_pdf_dot_leaders_are_collapsed(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "toc.pdf", ["3.6 Redirections . . . . . . . . . . . . . . 38"])
    assert load_file(pdf, max_bytes=MB).blocks[0].text.strip() == "3.6 Redirections … 38"
