"""Keyword search in the PostgreSQL catalog at 100,000 chunks, against SQLite FTS5 on the same corpus.

The corpus is generated, the same every run (seeded), from the demo corpus (CPython's
language reference, 79 topics, 65k words) repeated with variation: a document is one
topic's sentences in order from a random start, a fifth of them swapped for sentences of
another topic, cut into chunks of ~120 words that keep their section heading (indexed with
the text, as ingest does). One word in twelve is replaced by a word of a generated
40,000-word vocabulary drawn with a Zipf distribution (s = 1.1), half of them from 30 words
the document draws for itself, so rare words cluster in documents as names do in real
text. Documents stay on a topic, so a word's share of chunks is about its share in the
reference, not inflated by mixing every topic into every chunk. The chunks are split over
knowledge bases of different sizes (default 80,000 / 17,000 / 3,000: the smallest is
below the size where common query words are pruned) and written through each catalog's
own ``replace_document``. No embedding: this is the keyword side only.

Queries: the 65 benchmark questions (bench/data/demo_questions.jsonl) and the 10 of
the PostgreSQL parity test, each as ``keyword_search(kb, query, 50)`` (50: the
candidates hybrid search asks each side for), timed in every knowledge base. Baseline
(same run): the SQLite FTS5 catalog on the same corpus; the ratio is PostgreSQL's p50
over SQLite's. Also reported: how often the top hit is the same in both catalogs.

    .venv/bin/python bench/bench_catalog_pg.py [--pg-url URL] [--schema keel_bench_catalog]
        [--home bench/out/catalog-pg] [--sizes 80000,17000,3000] [--rounds 3] [--fresh] [--explain]

The PostgreSQL catalog lives in ``--schema`` of the database at ``--pg-url`` (made if
missing), the SQLite one under ``--home``; both are reused by later runs (``--fresh``
generates them again). Opening the PostgreSQL catalog brings its schema up to date, so
the first run of new code over an older store also times that upgrade. ``--explain``
prints EXPLAIN (ANALYZE, BUFFERS) of the slowest query's statements in each knowledge base.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from keel.knowledge import demo_documents
from keel.knowledge.catalog import Catalog
from keel.knowledge.catalog_pg import PgCatalog
from keel.knowledge.chunking import Chunk, split_units
from keel.knowledge.loaders import Document

HERE = Path(__file__).parent
WORDS = 120
#: share of a chunk's words replaced by words of the generated vocabulary
RARE_SHARE = 1 / 12
VOCABULARY, ZIPF_S = 40_000, 1.1
PARITY = ["What does the global statement do?", "with statement context manager", "lambda expressions",
          "operator precedence", "nonlocal", "string literal prefixes raw bytes", "comparison chaining",
          "try finally clause", "integer literals underscores", "await expression"]


def vocabulary(rng: random.Random) -> list[str]:
    """Pronounceable made-up words (2-4 syllables), distinct, in a fixed order."""
    onsets = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st", "pl")
    vowels, codas = ("a", "e", "i", "o", "u", "ai", "ou"), ("", "", "n", "r", "s", "l")
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        words["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                      for _ in range(rng.randint(2, 4)))] = None
    return list(words)


class Corpus:
    """The generated chunks of one knowledge base, document by document (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.topics = [(d.title, [(b.heading, u) for b in d.blocks for u, _ in split_units(b.text)])
                       for d in demo_documents()]
        self.rng = random.Random(seed)
        self.rare = vocabulary(random.Random(7))
        self.rare_weights = list(np.cumsum([1 / (r ** ZIPF_S) for r in range(1, VOCABULARY + 1)]))

    def _vary(self, sentence: str, own: list[str]) -> list[str]:
        words = sentence.split()
        for i in range(len(words)):
            if self.rng.random() < RARE_SHARE:  # half the document's own words, half the whole vocabulary's
                words[i] = self.rng.choice(own) if self.rng.random() < 0.5 else \
                    self.rng.choices(self.rare, cum_weights=self.rare_weights)[0]
        return words

    def document(self, kb: str, d: int) -> tuple[Document, list[Chunk], list[dict[str, Any]]]:
        """One demo topic's sentences in order from a random start (a fifth of them from another topic),
        with words varied, cut into chunks of about ``WORDS`` words that keep their section heading."""
        title, units = self.rng.choice(self.topics)
        _, other = self.rng.choice(self.topics)
        own = self.rng.choices(self.rare, cum_weights=self.rare_weights, k=30)
        doc = Document(f"synthetic:{kb}:{d}", f"{title} ({kb} {d})", [], f"hash-{kb}-{d}", "synthetic")
        start = self.rng.randrange(len(units))
        chunks: list[Chunk] = []
        words: list[str] = []
        for i in range(len(units)):
            heading, sentence = units[(start + i) % len(units)]
            if self.rng.random() < 0.2:
                sentence = self.rng.choice(other)[1]
            words += self._vary(sentence, own)
            if len(words) >= WORDS or i == len(units) - 1:
                chunks.append(Chunk(f"{kb}-{d}-{len(chunks)}", doc.doc_id, len(chunks), " ".join(words), None,
                                    heading, len(words)))
                words = []
        metas = [{"doc_id": doc.doc_id, "uri": doc.uri, "title": doc.title, "kind": doc.kind, "position": c.position}
                 for c in chunks]
        return doc, chunks, metas

    def documents(self, kb: str, n_chunks: int) -> Iterator[tuple[Document, list[Chunk], list[dict[str, Any]]]]:
        """Documents until ``n_chunks`` chunks (the last one cut short)."""
        d = 0
        while n_chunks > 0:
            doc, chunks, metas = self.document(kb, d)
            yield doc, chunks[:n_chunks], metas[:n_chunks]
            n_chunks -= len(chunks)
            d += 1


def schema_url(base: str, schema: str) -> str:
    url = sa.engine.make_url(base)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def prepare(args: argparse.Namespace, sizes: dict[str, int]) -> tuple[PgCatalog, Catalog]:
    admin = sa.create_engine(args.pg_url)
    with admin.begin() as conn:
        if args.fresh:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {args.schema} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {args.schema}"))
    admin.dispose()
    if args.fresh and args.home.exists():
        shutil.rmtree(args.home)
    start = time.perf_counter()
    pg = PgCatalog(schema_url(args.pg_url, args.schema))
    print(f"opened the PostgreSQL catalog (schema made or brought up to date) in {time.perf_counter() - start:.2f} s")
    lite = Catalog(args.home / "catalog.sqlite3")
    if all(pg.count_chunks(kb) == n == lite.count_chunks(kb) for kb, n in sizes.items()):
        return pg, lite
    for kb in sizes:  # a partial or different store: write it all again
        for row in pg.documents(kb):
            pg.delete_document(kb, row["doc_id"])
        for row in lite.documents(kb):
            lite.delete_document(kb, row["doc_id"])
    timings = {"PostgreSQL": 0.0, "SQLite": 0.0}
    for seed, (kb, n) in enumerate(sizes.items()):
        print(f"generating {n} chunks into {kb!r} ...", flush=True)
        for doc, chunks, metas in Corpus(seed).documents(kb, n):
            for name, catalog in (("PostgreSQL", pg), ("SQLite", lite)):
                start = time.perf_counter()
                catalog.replace_document(kb, doc, chunks, metas, version=doc.content_hash)
                timings[name] += time.perf_counter() - start
    with pg._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE kb_chunks")  # what autovacuum does after a bulk load, now
    print("written in " + ", ".join(f"{name} {t:.0f} s" for name, t in timings.items()))
    return pg, lite


def timed(catalog: Any, kb: str, queries: list[str], rounds: int) -> tuple[list[float], dict[str, list[str]]]:
    times, results = [], {}
    for _ in range(rounds):
        for q in queries:
            start = time.perf_counter()
            hits = catalog.keyword_search(kb, q, 50)
            times.append((time.perf_counter() - start) * 1000)
            results[q] = [c for c, _ in hits]
    return times, results


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def explain(pg: PgCatalog, kb: str, query: str) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement one keyword search runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "EXPLAIN" not in statement:
            seen.append((statement, parameters))

    sa.event.listen(pg._engine, "before_cursor_execute", record)
    try:
        pg.keyword_search(kb, query, 50)
    finally:
        sa.event.remove(pg._engine, "before_cursor_execute", record)
    with pg._engine.connect() as conn:
        for statement, parameters in seen:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).scalars()
            print("\n" + statement.strip()[:160].replace("\n", " ") + " ...")
            print("\n".join("    " + line for line in plan))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", default="keel_bench_catalog")
    parser.add_argument("--home", type=Path, default=HERE / "out" / "catalog-pg")
    parser.add_argument("--sizes", default="80000,17000,3000", help="chunks per knowledge base, biggest first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    sizes = {f"kb{i}": int(n) for i, n in enumerate(args.sizes.split(","))}
    queries = [json.loads(line)["q"] for line in (HERE / "data" / "demo_questions.jsonl").read_text().splitlines()
               if line.strip()] + PARITY
    pg, lite = prepare(args, sizes)
    for kb in sizes:  # warm up both (caches, connections)
        timed(pg, kb, queries, 1)
        timed(lite, kb, queries, 1)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {len(queries)} queries x "
          f"{args.rounds} rounds per row; keyword_search(kb, query, 50)\n")
    print(f"{'knowledge base':<22}{'catalog':<12}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}")
    slowest = {}
    for kb, n in sizes.items():
        lite_t, lite_r = timed(lite, kb, queries, args.rounds)
        pg_t, pg_r = timed(pg, kb, queries, args.rounds)
        label = f"{kb} ({n} chunks)"
        for name, t in (("SQLite", lite_t), ("PostgreSQL", pg_t)):
            print(f"{label:<22}{name:<12}{pct(t, 50):8.1f}{pct(t, 95):8.1f}{max(t):8.1f}", flush=True)
        same = sum(bool(pg_r[q]) and pg_r[q][:1] == lite_r[q][:1] for q in queries)
        overlap = np.mean([len(set(pg_r[q][:10]) & set(lite_r[q][:10])) for q in queries])
        print(f"{'':<22}PostgreSQL p50 / SQLite p50: {pct(pg_t, 50) / pct(lite_t, 50):.2f}x; same top hit "
              f"{same}/{len(queries)}, top-10 overlap {overlap:.1f}")
        per_query = np.array(pg_t).reshape(args.rounds, len(queries)).min(axis=0)
        slowest[kb] = queries[int(per_query.argmax())]
    if args.explain:
        for kb, query in slowest.items():
            print(f"\n=== {kb}: slowest query {query!r}")
            explain(pg, kb, query)
    pg.close()
    lite.close()


if __name__ == "__main__":
    main()
