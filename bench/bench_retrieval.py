"""Retrieval quality on the demo corpus: keyword-only, vector-only and hybrid, in one run.

The corpus is ``keel ingest --demo`` (CPython's language reference, one document
per topic). The questions (bench/data/demo_questions.jsonl, written by hand for
this benchmark) are phrased the way a user asks, avoiding the reference's own
wording; each lists the topics that answer it.

Each question retrieves the top 10 chunks. A chunk is relevant when its topic
is listed. hit@5: a relevant chunk in the top 5. MRR: 1 / rank of the first
relevant chunk (0 if none in the top 10). nDCG@10: binary gain, each topic
counted once (a second chunk of a topic already seen gains nothing), ideal
= min(10, topics listed). The baseline for the ratios is the better of the two
single retrievers, measured in the same run.

    .venv/bin/python bench/bench_retrieval.py [--home bench/out/demo-home] [--sweep]
    .venv/bin/python bench/bench_retrieval.py --manual

``--manual`` is the new-user check instead: the whole Bash Reference Manual
PDF (Debian bash-doc, 196 pages) and pip's Markdown topic pages (Debian
python3-pip, gunzipped into <home>/pip-docs), then 26 questions written in
other words than the text (bench/data/manual_questions.jsonl): is the right
page (or, for Markdown, the right file) in the top 3?

The first run embeds the corpus (minutes on 2 busy cores); later runs reuse the
store and its embedding cache.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import statistics
import time
from pathlib import Path

from keel.config import KnowledgeSettings
from keel.knowledge import KnowledgeBase, demo_documents

HERE = Path(__file__).parent
MODES = ("keyword", "vector", "hybrid")


def metrics(ranked_topics: list[str], relevant: set[str]) -> dict[str, float]:
    first = next((i for i, t in enumerate(ranked_topics, 1) if t in relevant), None)
    seen: set[str] = set()
    dcg = 0.0
    for i, topic in enumerate(ranked_topics[:10], 1):
        if topic in relevant and topic not in seen:
            dcg += 1 / math.log2(i + 1)
            seen.add(topic)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(10, len(relevant)) + 1))
    return {"hit@5": float(first is not None and first <= 5), "mrr": 1 / first if first else 0.0,
            "ndcg@10": dcg / ideal}


def evaluate(kb: KnowledgeBase, questions: list[dict], mode: str) -> dict[str, float]:
    rows, times = [], []
    for q in questions:
        start = time.perf_counter()
        hits = kb.search(q["q"], kb="demo", k=10, mode=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        rows.append(metrics([h.uri.removeprefix("pydoc:") for h in hits], set(q["relevant"])))
    out = {name: statistics.fmean(r[name] for r in rows) for name in rows[0]}
    out["p50_ms"] = statistics.median(times) * 1000
    return out


def manual_check(home: Path) -> None:
    pdf = Path("/usr/share/doc/bash/bashref.pdf")
    topics = Path("/usr/share/doc/python3-pip/html/topics")
    if not pdf.exists() or not topics.exists():
        raise SystemExit("needs Debian's bash-doc and python3-pip docs: apt-get install bash-doc python3-pip")
    questions = [json.loads(line) for line in (HERE / "data" / "manual_questions.jsonl").read_text().splitlines()
                 if line.strip()]
    kb = KnowledgeBase(KnowledgeSettings(), home)
    folder = home / "pip-docs"  # a fixed place: the same files are the same documents next run
    folder.mkdir(parents=True, exist_ok=True)
    for f in topics.iterdir():
        if f.suffix == ".gz":
            (folder / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, folder / f.name)
    report = kb.ingest([pdf, folder], kb="manual")
    print(f"ingested: {report.documents} new, {report.unchanged} unchanged, {report.pages} pages, "
          f"{report.chunks} chunks, {report.seconds:.1f} s; skipped: "
          + (", ".join(f"{Path(f.path).name} ({f.message.split(': ', 1)[-1]})" for f in report.failed) or "none"))
    other = 1.0 if kb.settings.keyword_weight != 1.0 else 0.5
    variants = [(mode, None) for mode in MODES] + [("hybrid", other)]
    for mode, keyword_weight in variants:
        if keyword_weight is not None:
            kb.settings = kb.settings.model_copy(update={"keyword_weight": keyword_weight})
        top1 = top3 = 0
        for q in questions:
            hits = kb.search(q["q"], kb="manual", k=3, mode=mode)  # type: ignore[arg-type]
            ok = [Path(h.uri).name == q["file"] and h.page in q["pages"] for h in hits]
            top1 += ok[0] if ok else 0
            top3 += any(ok)
            if mode == "hybrid" and keyword_weight is None and not any(ok):
                got = ", ".join(f"{Path(h.uri).name} p.{h.page}" for h in hits)
                print(f"  miss: {q['q']}  (want {q['file']} {q['pages']}; got {got})")
        label = mode if keyword_weight is None else f"{mode} (keyword weight {keyword_weight})"
        print(f"{label:<8} right page in top 3: {top3}/{len(questions)}  at rank 1: {top1}/{len(questions)}")
    kb.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=HERE / "out" / "demo-home")
    parser.add_argument("--questions", type=Path, default=HERE / "data" / "demo_questions.jsonl")
    parser.add_argument("--sweep", action="store_true", help="also print RRF k and weight variants")
    parser.add_argument("--manual", action="store_true", help="the new-user check on a real PDF and Markdown")
    args = parser.parse_args()
    if args.manual:
        manual_check(args.home)
        return
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    settings = KnowledgeSettings()
    kb = KnowledgeBase(settings, args.home)
    docs = demo_documents()
    report = kb.ingest_documents(docs, kb="demo", total=len(docs))
    print(f"demo corpus: {len(docs)} documents, {kb.catalog.count_chunks('demo')} chunks "
          f"(ingest this run: {report.documents} new, {report.unchanged} unchanged, {report.seconds:.1f} s)")
    print(f"{len(questions)} questions; top 10 chunks each; RRF k={settings.rrf_k}, "
          f"weights vector={settings.vector_weight} keyword={settings.keyword_weight}\n")
    results = {mode: evaluate(kb, questions, mode) for mode in MODES}
    print(f"{'mode':<10}{'hit@5':>8}{'MRR':>8}{'nDCG@10':>9}{'p50 ms':>9}")
    for mode, r in results.items():
        print(f"{mode:<10}{r['hit@5']:8.3f}{r['mrr']:8.3f}{r['ndcg@10']:9.3f}{r['p50_ms']:9.1f}")
    from keel.knowledge import catalog

    saved, catalog.PRUNE_FROM_CHUNKS = catalog.PRUNE_FROM_CHUNKS, 0
    for mode in ("keyword", "hybrid"):  # the common-word pruning big knowledge bases use, forced on here
        r = evaluate(kb, questions, mode)
        print(f"{mode + '*':<10}{r['hit@5']:8.3f}{r['mrr']:8.3f}{r['ndcg@10']:9.3f}{r['p50_ms']:9.1f}")
    catalog.PRUNE_FROM_CHUNKS = saved
    print(f"* with the keyword pruning of knowledge bases >= {saved} chunks forced on "
          f"(words in > {catalog.COMMON_SHARE:.0%} of chunks dropped)")
    print()
    for name in ("hit@5", "mrr", "ndcg@10"):
        base = max(results["keyword"][name], results["vector"][name])
        ratio = results["hybrid"][name] / base if base else float("inf")
        print(f"hybrid / best single on {name}: {ratio:.3f}x")
    if args.sweep:
        print("\nRRF variants (hybrid only):")
        for k in (10, 30, 60):
            for vw, kw in ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)):
                kb.settings = settings.model_copy(update={"rrf_k": k, "vector_weight": vw, "keyword_weight": kw})
                r = evaluate(kb, questions, "hybrid")
                print(f"  k={k:<3} vector={vw} keyword={kw}: hit@5 {r['hit@5']:.3f}  MRR {r['mrr']:.3f}  "
                      f"nDCG@10 {r['ndcg@10']:.3f}")
    kb.close()


if __name__ == "__main__":
    main()
