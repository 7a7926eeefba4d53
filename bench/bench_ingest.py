"""Ingest of a real 50-page PDF manual: seconds until searchable, pages/s and chunks/s.

The PDF is the first 50 pages of the Bash Reference Manual from Debian's
``bash-doc`` package (scripts/setup.sh installs it); without it the benchmark
says so and uses a generated 50-page PDF of the demo corpus instead.

Timed from a cold start in a fresh data directory: open the store, load the
model, extract, chunk, embed, store, and answer one search. Target: searchable
within 20 s on 2 cores. The baseline, measured in the same run, is pypdf's
text extraction alone (the floor any PDF ingest pays); also shown: the same
PDF again (unchanged, must cost nothing) and into a second knowledge base
with the embedding cache warm.

    .venv/bin/python bench/bench_ingest.py [--pdf PATH] [--pages 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from keel.config import KnowledgeSettings
from keel.knowledge import CachedEmbedder, KnowledgeBase, LocalEmbedder
from keel.knowledge.loaders import load_file

HERE = Path(__file__).parent
MANUAL = Path("/usr/share/doc/bash/bashref.pdf")
QUERY = "how do I feed several lines of text to a command from inside a script"


class Timed:
    """The default embedder, with the time spent in it counted (model load included)."""

    def __init__(self, home: Path) -> None:
        start = time.perf_counter()
        self.inner = CachedEmbedder(LocalEmbedder(), home / "kb" / "embeddings.sqlite3")
        self.name, self.dim = self.inner.name, self.inner.dim
        self.load_s = time.perf_counter() - start
        self.embed_s = 0.0

    @property
    def computed(self) -> int:
        return self.inner.computed

    def embed_windows(self, texts: list[str]) -> list:
        start = time.perf_counter()
        try:
            return self.inner.embed_windows(texts)
        finally:
            self.embed_s += time.perf_counter() - start

    def embed_query(self, text: str):  # noqa: ANN201
        return self.inner.embed_query(text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def make_pdf(source: Path | None, pages: int, out: Path) -> tuple[Path, str]:
    if source and source.exists():
        writer = PdfWriter()
        for page in PdfReader(source).pages[:pages]:
            writer.add_page(page)
        writer.add_metadata({"/Title": "Bash Reference Manual (first 50 pages)"})
        writer.write(out)
        return out, f"{source} (first {pages} pages)"
    from keel.knowledge import demo_documents
    from keel.knowledge.testing import write_pdf

    text = " ".join(b.text for d in demo_documents() for b in d.blocks)
    per_page = 2600  # the manual's average characters per page
    write_pdf(out, [text[i * per_page:(i + 1) * per_page] for i in range(pages)], title="Generated manual")
    return out, f"generated from the demo corpus ({source} not found: apt-get install bash-doc)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pdf", type=Path, default=MANUAL)
    parser.add_argument("--pages", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pdf, label = make_pdf(args.pdf, args.pages, Path(tmp) / "manual.pdf")
        start = time.perf_counter()
        doc = load_file(pdf, max_bytes=10**9)
        extract_s = time.perf_counter() - start

        start = time.perf_counter()
        home = Path(tmp) / "home"
        embedder = Timed(home)
        kb = KnowledgeBase(KnowledgeSettings(), home, embedder=embedder)
        report = kb.ingest([pdf])
        hits = kb.search(QUERY, k=3)
        searchable_s = time.perf_counter() - start
        assert report.ok and hits, report.failed

        again = kb.ingest([pdf])
        start = time.perf_counter()
        warm = kb.ingest([pdf], kb="second")
        warm_s = time.perf_counter() - start
        tokens = sum(kb.embedder.count_tokens(b.text) for b in doc.blocks)
        kb.close()

    print(f"PDF: {label}: {doc.pages} pages, {sum(len(b.text) for b in doc.blocks)} characters, {tokens} tokens")
    print(f"cold ingest until searchable: {searchable_s:.2f} s (target < 20 s); ingest itself {report.seconds:.2f} s")
    print(f"  {report.pages / searchable_s:.2f} pages/s, {report.chunks / searchable_s:.2f} chunks/s "
          f"({report.chunks} chunks, {tokens / searchable_s:.0f} tokens/s)")
    print(f"  of which: model load {embedder.load_s:.2f} s, embedding {embedder.embed_s:.2f} s, "
          f"the rest (extract, chunk, store, search) {searchable_s - embedder.load_s - embedder.embed_s:.2f} s")
    print(f"baseline, pypdf text extraction alone: {extract_s:.2f} s "
          f"({doc.pages / extract_s:.1f} pages/s); full ingest is {searchable_s / extract_s:.1f}x the extraction")
    print(f"same PDF again: {again.seconds:.3f} s, {again.documents} documents re-stored, {again.embedded} embedded")
    print(f"into a second knowledge base, embedding cache warm: {warm_s:.2f} s, {warm.embedded} embedded "
          f"({searchable_s / warm_s:.1f}x faster than cold)")
    print(f"top hit for {QUERY!r}: "
          f"page {hits[0].page}: {' '.join(hits[0].text.split())[:100]}")


if __name__ == "__main__":
    main()
