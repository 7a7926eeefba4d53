"""Chunking: a document's blocks become token-sized, overlapping chunks.

Cuts fall on paragraph and sentence boundaries; only a sentence longer than a
whole chunk is cut inside, on token boundaries. A chunk never spans two pages
or two sections, so its page and heading are exact. Each chunk carries its
section heading as context, which is embedded and indexed with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from .loaders import Block, Document

__all__ = ["Chunk", "chunk_document", "split_units"]

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?;:])\s+|\n(?=\s*(?:[-*•]|\d+[.)])\s)")


@dataclass
class Chunk:
    id: str
    doc_id: str
    position: int
    text: str
    page: int | None
    heading: str | None
    tokens: int

    def context_text(self, title: str) -> str:
        """What is embedded and keyword-indexed: the title and heading, then the text."""
        head = " › ".join(x for x in (title, self.heading) if x and x not in self.text[:200])
        return f"{head}\n{self.text}" if head else self.text


def split_units(text: str) -> list[tuple[str, bool]]:
    """Sentences of ``text``; the flag says a new paragraph starts there."""
    units: list[tuple[str, bool]] = []
    for para in _PARAGRAPHS.split(text):
        sentences = [s.strip() for s in _SENTENCES.split(para) if s and s.strip()]
        units.extend((s, i == 0) for i, s in enumerate(sentences))
    return units


def _hard_split(text: str, size: int, count: Callable[[str], int]) -> list[str]:
    """A sentence longer than a chunk, cut on word boundaries into pieces of at most ``size`` tokens."""
    words = []
    for word in text.split(" "):
        n = count(word)
        if n <= size:
            words.append(word)
        else:  # one "word" over budget (an ASCII table row, a long URL): cut it by characters
            step = max(1, len(word) * size // (n + 1))
            words.extend(word[i:i + step] for i in range(0, len(word), step))
    pieces: list[str] = []
    current: list[str] = []
    for word in words:
        if current and count(" ".join([*current, word])) > size:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _join(units: list[tuple[str, bool, int]]) -> str:
    out = ""
    for text, new_para, _ in units:
        out += ("\n\n" if new_para else " ") + text if out else text
    return out


def _block_chunks(block: Block, size: int, overlap: int,
                  count: Callable[[str], int]) -> list[tuple[str, int]]:
    units: list[tuple[str, bool, int]] = []
    for text, new_para in split_units(block.text):
        n = count(text)
        if n <= size:
            units.append((text, new_para, n))
        else:
            units.extend((p, new_para and i == 0, count(p)) for i, p in enumerate(_hard_split(text, size, count)))
    out: list[tuple[str, int]] = []
    current: list[tuple[str, bool, int]] = []
    total = 0
    for unit in units:
        if current and total + unit[2] > size:
            out.append((_join(current), total))
            carry: list[tuple[str, bool, int]] = []
            for prev in reversed(current):  # whole trailing sentences, up to `overlap` tokens
                if sum(u[2] for u in carry) + prev[2] > overlap:
                    break
                carry.insert(0, prev)
            if carry and sum(u[2] for u in carry) + unit[2] > size:
                carry = []
            current, total = carry, sum(u[2] for u in carry)
        current.append(unit)
        total += unit[2]
    if current:
        out.append((_join(current), total))
    return out


def chunk_document(doc: Document, *, size: int, overlap: int, count: Callable[[str], int]) -> list[Chunk]:
    """Chunks of ``doc`` in reading order, ids stable for the same content and position."""
    chunks: list[Chunk] = []
    for block in doc.blocks:
        for text, tokens in _block_chunks(block, size, overlap, count):
            position = len(chunks)
            digest = hashlib.sha256(f"{doc.doc_id}\0{position}\0{text}".encode()).hexdigest()[:24]
            chunks.append(Chunk(digest, doc.doc_id, position, text, block.page, block.heading, tokens))
    return chunks
