"""Loaders: a file on disk becomes a :class:`Document` of text blocks, or a clear error.

Each block keeps what a citation needs: the 1-based page (PDF) and the section
heading it sits under. A file keel cannot read (encrypted, corrupt or empty PDF,
binary, too big, unknown type) raises :class:`~keel.errors.InputError` naming
the file and what to do; the ingest records it and carries on with the rest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ..errors import InputError

__all__ = ["SUFFIXES", "Block", "Document", "doc_id_for", "file_identity", "iter_files", "load_file", "text_document"]

SUFFIXES = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
            ".txt": "text", ".text": "text", ".rst": "text"}


@dataclass
class Block:
    """A run of text with one page and one heading."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass
class Document:
    uri: str
    title: str
    blocks: list[Block]
    #: sha256 of the source bytes: an unchanged document is skipped on re-ingest
    content_hash: str
    kind: str = "text"
    pages: int = 0
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        """Stable per source: the same file ingested again replaces itself."""
        return doc_id_for(self.uri)


def doc_id_for(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def file_identity(path: Path) -> tuple[str, str]:
    """(doc id, sha256 of the bytes): enough to tell an unchanged file without parsing it."""
    return doc_id_for(str(path.resolve())), hashlib.sha256(path.read_bytes()).hexdigest()


def iter_files(path: Path) -> Iterator[Path]:
    """The file itself, or every non-hidden file under a folder, in a stable order."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
                yield p
    else:
        yield path


def load_file(path: Path, *, max_bytes: int) -> Document:
    """Read one file into a Document, or raise InputError saying why not."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", hint="check the path")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(SUFFIXES))
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}",
                         hint=f"keel reads {known}; convert the file or leave it out")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit",
                         hint="split the file, or raise knowledge.max_file_mb in keel.yaml")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    uri = str(path.resolve())
    if kind == "pdf":
        return _pdf(path, data, uri, digest)
    text = _decode(path, data)
    if kind == "markdown":
        title, blocks = _markdown(text)
    elif kind == "html":
        title, blocks = _html(text)
    else:
        title, blocks = None, [Block(text)]
    return _finish(path, Document(uri, title or path.stem, blocks, digest, kind))


def text_document(uri: str, title: str, text: str, kind: str = "text") -> Document:
    """A document from text already in memory (the demo corpus, the Python API)."""
    digest = hashlib.sha256(f"{title}\0{text}".encode()).hexdigest()
    blocks = _markdown(text)[1] if kind == "markdown" else [Block(text, heading=None)]
    return Document(uri, title, blocks, digest, kind)


def _finish(path: Path, doc: Document) -> Document:
    doc.blocks = [b for b in doc.blocks if b.text.strip()]
    if not doc.blocks:
        raise InputError(f"{path}: the file has no text", hint="check the file; empty files are skipped")
    return doc


def _decode(path: Path, data: bytes) -> str:
    if b"\0" in data[:8192]:
        raise InputError(f"{path}: looks like a binary file, not {path.suffix} text",
                         hint="give keel the document itself (PDF, Markdown, HTML or text)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text", hint="re-save it as UTF-8") from None


# -- PDF ------------------------------------------------------------------------------------


def _pdf(path: Path, data: bytes, uri: str, digest: str) -> Document:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # a damaged xref is reported by us, once
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{path}: the PDF is encrypted with a password",
                             hint="save an unencrypted copy (e.g. qpdf --decrypt) and ingest that")
        pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except InputError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise InputError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})",
                         hint="the file is damaged or not a PDF; re-export it") from None
    if not any(text.strip() for _, text in pages):
        raise InputError(f"{path}: the PDF has no extractable text ({len(pages)} pages)",
                         hint="a scanned PDF needs OCR first (e.g. ocrmypdf)")
    blocks = [Block(_clean_pdf_text(text), page=number) for number, text in pages]
    doc = Document(uri, str(meta_title).strip() or path.stem, blocks, digest, "pdf", pages=len(pages))
    return _finish(path, doc)


def _clean_pdf_text(text: str) -> str:
    text = re.sub(r"-\n(?=[a-z])", "", text)  # re-join hyphenated line breaks
    text = re.sub(r"(?:\s*\.){4,}", " … ", text)  # table-of-contents dot leaders: noise to both indexes
    return re.sub(r"[ \t]+", " ", text)


# -- Markdown --------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _markdown(text: str) -> tuple[str | None, list[Block]]:
    title: str | None = None
    blocks: list[Block] = []
    heading: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        m = _MD_HEADING.match(line)
        if m:
            blocks.append(Block("\n".join(lines).strip(), heading=heading))
            lines = []
            heading = m.group(2).strip()
            title = title or heading
            lines.append(heading)
        else:
            lines.append(line)
    blocks.append(Block("\n".join(lines).strip(), heading=heading))
    return title, blocks


# -- HTML ----------------------------------------------------------------------------------------


class _Readable(HTMLParser):
    """Visible text of a page, split at headings; scripts, styles and navigation dropped."""

    SKIP = {"script", "style", "noscript", "template", "svg", "nav", "head", "footer", "form", "button"}
    BREAK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table", "ul", "ol", "dd",
             "dt"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.blocks: list[Block] = []
        self._skip = 0
        self._in_title = False
        self._in_heading = False
        self._heading: str | None = None
        self._parts: list[str] = []
        self._heading_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag in self.HEADINGS and not self._skip:
            self._flush()
            self._in_heading, self._heading_parts = True, []
        elif tag in self.BREAK:
            self._parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS and self._in_heading:
            self._in_heading = False
            self._heading = " ".join("".join(self._heading_parts).split())
            self._parts.append(self._heading + "\n")
        elif tag in self.BREAK:
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._skip:
            return
        elif self._in_heading:
            self._heading_parts.append(data)
        else:
            self._parts.append(data)

    def _flush(self) -> None:
        text = re.sub(r"\n\s*\n\s*", "\n\n", re.sub(r"[ \t]+", " ", "".join(self._parts)))
        self.blocks.append(Block(text.strip(), heading=self._heading))
        self._parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def _html(text: str) -> tuple[str | None, list[Block]]:
    parser = _Readable()
    parser.feed(text)
    parser.close()
    first_heading = next((b.heading for b in parser.blocks if b.heading), None)
    return (" ".join(parser.title.split()) or first_heading), parser.blocks
