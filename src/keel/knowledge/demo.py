"""The demo corpus: the Python language reference that ships with CPython.

``pydoc_data.topics`` holds the reference's topics as reStructuredText-like
text (about 110k tokens), so every machine has it offline. One document per
topic: uri ``pydoc:<topic-key>``, title the topic's heading, blocks split at
its sub-headings so chunks keep their section as context.
"""

from __future__ import annotations

import hashlib
import re

from .loaders import Block, Document

__all__ = ["demo_documents"]

# a heading is a line underlined by a run of one punctuation character at least as long
_UNDERLINE = re.compile(r"^([*=\-~^\"'`#+])\1{2,}\s*$")


def _sections(text: str) -> tuple[str, list[Block]]:
    lines = text.splitlines()
    title = ""
    blocks: list[Block] = []
    heading: str | None = None
    current: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()):
            blocks.append(Block("\n".join(current), heading=heading))
            heading = line.strip()
            title = title or heading
            current = [heading]
            i += 2
            continue
        current.append(line)
        i += 1
    blocks.append(Block("\n".join(current), heading=heading))
    return title, [b for b in blocks if b.text.strip()]


def demo_documents() -> list[Document]:
    """One Document per topic of the language reference, in key order."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        text = topics[key]
        title, blocks = _sections(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        docs.append(Document(f"pydoc:{key}", title or key, blocks, digest, "pydoc", metadata={"topic": key}))
    return docs
