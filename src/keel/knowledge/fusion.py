"""Reciprocal rank fusion: several ranked lists become one.

Each list votes ``weight / (k + rank)`` for every item it ranks (rank from 1).
Ranks, not raw scores, are fused, so cosine similarities and BM25 scores need
no calibration against each other. ``k`` damps how much the very top of one
list dominates (60 in the original paper, Cormack et al. 2009).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["dedupe_windows", "rrf"]


def rrf(lists: Sequence[Sequence[str]], *, k: int = 60,
        weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Items of all ``lists`` by fused score, best first; ties keep first-seen order."""
    weights = weights or [1.0] * len(lists)
    scores: dict[str, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, item in enumerate(ranked, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def dedupe_windows(hits: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Window hits ``<chunk>:<w>`` as chunk hits, each chunk at its best window's score."""
    best: dict[str, float] = {}
    for rid, score in hits:
        chunk = rid.rsplit(":", 1)[0]
        if chunk not in best or score > best[chunk]:
            best[chunk] = score
    return sorted(best.items(), key=lambda kv: -kv[1])
