"""Fakes for testing code that uses the knowledge base, shipped so users can test their apps too.

- :class:`HashEmbedder`: deterministic bag-of-words vectors, no model, instant.
  Texts sharing words get similar vectors, which is enough to test plumbing
  (ingest, idempotency, filters, fusion) without loading MiniLM.
- :func:`write_pdf`: a real, minimal PDF with one text page per string, so
  tests need no PDF file from the machine. ``pypdf`` reads it back page by page.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["HashEmbedder", "write_pdf"]


class HashEmbedder:
    """Each word hashed into one of ``dim`` buckets; vectors L2-normalised."""

    name = "test:hash"

    def __init__(self, dim: int = 256, window_tokens: int = 254) -> None:
        self.dim = dim
        self.window_tokens = window_tokens
        self.calls = 0

    def _words(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def _vector(self, words: list[str]) -> NDArray[np.float32]:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in words:
            v[int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def embed_windows(self, texts: list[str]) -> list[NDArray[np.float32]]:
        self.calls += 1
        out = []
        for text in texts:
            words = self._words(text) or [""]
            step = self.window_tokens
            out.append(np.stack([self._vector(words[i:i + step]) for i in range(0, len(words), step)]))
        return out

    def embed_query(self, text: str) -> NDArray[np.float32]:
        return self._vector(self._words(text) or [""])

    def count_tokens(self, text: str) -> int:
        return len(self._words(text))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrap(text: str, width: int = 90) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines


def write_pdf(path: Path, pages: list[str], *, title: str | None = None) -> Path:
    """Write a PDF with one page per string (Helvetica, wrapped), built object by object."""
    objects: list[bytes] = []
    kids = []
    font_id = 3
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"")  # pages tree, filled below
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for text in pages:
        body = "BT /F1 10 Tf 12 TL 50 800 Td " + " ".join(f"({_escape(line)}) Tj T*" for line in _wrap(text))
        stream = (body + " ET").encode("cp1252", errors="replace")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content_id, font_id))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    info_id = None
    if title:
        objects.append(b"<< /Title (%s) >>" % _escape(title).encode("cp1252", errors="replace"))
        info_id = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1) + (b" /Info %d 0 R" % info_id if info_id else b"")
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path
