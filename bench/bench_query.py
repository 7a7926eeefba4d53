"""Query latency at 100,000 chunks: p50 and p95 for hybrid, vector-only and keyword-only search.

The 100k chunks are generated (embedding 100k real chunks would take hours
here): 1,000 documents of 100 chunks, each chunk ~120 words of sentences drawn
from the demo corpus (so the keyword index sees real vocabulary), its vector a
real MiniLM vector of a demo chunk plus noise, re-normalised (so the vector
index sees realistic clusters, not uniform noise). They are written through the
same catalog and Chroma store that ingest uses. Queries are the 65 benchmark
questions, each embedded by the real model inside the timed region: the figure
is what a caller of ``KnowledgeBase.search`` waits.

Baseline, same run: the same queries against the demo knowledge base (~400
chunks); the ratio shows what 250x more chunks costs. Target: p50 < 50 ms.

    .venv/bin/python bench/bench_query.py [--chunks 100000] [--home bench/out/query-home]

The generated store is kept under --home and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from keel.config import KnowledgeSettings
from keel.knowledge import KnowledgeBase, demo_documents
from keel.knowledge.chunking import Chunk, split_units
from keel.knowledge.ingest import Ingestor
from keel.knowledge.loaders import Block, Document

HERE = Path(__file__).parent
PER_DOC = 100


def demo_kb(home: Path) -> KnowledgeBase:
    kb = KnowledgeBase(KnowledgeSettings(), home)
    docs = demo_documents()
    kb.ingest_documents(docs, kb="demo", total=len(docs))
    return kb


def source_vectors(kb: KnowledgeBase) -> np.ndarray:
    col = kb.vectors._collection(kb._collection("demo"))
    return np.asarray(col.get(include=["embeddings"])["embeddings"], dtype=np.float32)


def generate(kb: KnowledgeBase, n_chunks: int, seeds: np.ndarray, sentences: list[str]) -> None:
    rng = random.Random(7)
    np_rng = np.random.default_rng(7)
    ingestor = Ingestor(kb.catalog, kb.vectors, kb.embedder, kb._collection("big"), "big",
                        chunk_tokens=500, chunk_overlap=50)
    start = time.perf_counter()
    for d in range(n_chunks // PER_DOC):
        doc = Document(f"synthetic:{d}", f"Synthetic document {d}", [Block("")], f"hash{d}", "synthetic")
        chunks, vectors = [], []
        for p in range(PER_DOC):
            words: list[str] = []
            while len(words) < 120:
                words += rng.choice(sentences).split()
            text = " ".join(words)
            chunks.append(Chunk(f"s{d}-{p}", doc.doc_id, p, text, None, None, len(words)))
            v = seeds[rng.randrange(len(seeds))] + np_rng.normal(0, 0.03, seeds.shape[1]).astype(np.float32)
            vectors.append(v / np.linalg.norm(v))
        metas = [ingestor._metadata(doc, c) for c in chunks]
        ingestor._upsert(chunks, metas, [v[None, :] for v in vectors])
        kb.catalog.replace_document("big", doc, chunks, metas, version=doc.content_hash)
        if (d + 1) % 100 == 0:
            print(f"  generated {(d + 1) * PER_DOC} chunks, {time.perf_counter() - start:.0f} s", flush=True)


def latencies(kb: KnowledgeBase, questions: list[str], kb_name: str, mode: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        for q in questions:
            start = time.perf_counter()
            kb.search(q, kb=kb_name, k=5, mode=mode)  # type: ignore[arg-type]
            times.append((time.perf_counter() - start) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--home", type=Path, default=HERE / "out" / "query-home")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    questions = [json.loads(line)["q"] for line in (HERE / "data" / "demo_questions.jsonl").read_text().splitlines()
                 if line.strip()]
    kb = demo_kb(args.home)
    have = kb.catalog.count_chunks("big")
    if have < args.chunks:
        print(f"generating {args.chunks} chunks (have {have}) ...", flush=True)
        sentences = [u for d in demo_documents() for b in d.blocks for u, _ in split_units(b.text)
                     if len(u.split()) >= 4]
        generate(kb, args.chunks, source_vectors(kb), sentences)
    n = kb.catalog.count_chunks("big")
    kb.search("warm up", kb="big")
    kb.search("warm up", kb="demo")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {len(questions)} questions x "
          f"{args.rounds} rounds per row; k=5, {kb.settings.candidates} candidates per side\n")
    print(f"{'store':<14}{'mode':<9}{'p50 ms':>8}{'p95 ms':>8}")
    base = {}
    for name, label in (("demo", f"{kb.catalog.count_chunks('demo')} chunks"), ("big", f"{n} chunks")):
        for mode in ("hybrid", "vector", "keyword"):
            t = latencies(kb, questions, name, mode, args.rounds)
            print(f"{label:<14}{mode:<9}{pct(t, 50):8.1f}{pct(t, 95):8.1f}", flush=True)
            if name == "demo":
                base[mode] = t
            else:
                print(f"{'':<23}p50 ratio to the demo-size baseline: {pct(t, 50) / pct(base[mode], 50):.2f}x")
    start = time.perf_counter()
    for q in questions:
        kb.embedder.embed_query(q)
    print(f"\nquery embedding alone (inside every vector/hybrid figure): "
          f"{(time.perf_counter() - start) * 1000 / len(questions):.1f} ms mean")
    kb.close()


if __name__ == "__main__":
    main()
