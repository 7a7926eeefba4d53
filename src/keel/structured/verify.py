"""Check extracted values against the source text.

Valid is not enough: a small model fills a valid schema with invented values
(it read "25,000 EUR" as 250000 USD). Every string, number and date that an
extraction returns is looked for in the text, after normalising both sides:
"25,000" and "25 000" are 25000; "3 March 2024", "March 3, 2024" and
"2024-03-03" are the same date; "EUR" matches "€". A value that cannot be found
is *unsupported*: the extractor re-asks about it, then reports it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["Discrepancy", "SourceIndex", "find_unsupported"]

_MONTHS = {
    m: i + 1
    for i, names in enumerate([
        ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
        ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
        ("november", "nov"), ("december", "dec"),
    ])
    for m in names
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_CURRENCY_SYMBOLS = {"€": "eur", "$": "usd", "£": "gbp", "¥": "jpy", "₹": "inr", "euro": "eur", "euros": "eur",
                     "dollar": "usd", "dollars": "usd", "pound": "gbp", "pounds": "gbp"}
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:[ ,.\u00a0']\d{3})+(?:[.,]\d+)?(?![\w])|[-+]?\d+(?:[.,]\d+)?")
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "mn": 1e6, "bn": 1e9, "billion": 1e9}


def _norm_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).casefold()
    s = re.sub(r"[^\w€$£¥₹%]+", " ", s)
    return " ".join(s.split())


def _parse_number(token: str) -> list[float]:
    """All readings of a number token: '25,000' -> 25000; '12,5' -> 12.5 and 125."""
    t = token.replace("\u00a0", " ").replace("'", ",").replace(" ", ",")
    readings = set()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", t):
        readings.add(float(t.replace(",", "")))
    elif re.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+(,\d+)?", t):
        readings.add(float(t.replace(".", "").replace(",", ".")))
    else:
        for candidate in (t.replace(",", "."), t.replace(",", "")):
            with contextlib.suppress(ValueError):
                readings.add(float(candidate))
    return sorted(readings)


def _date(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def parse_dates(text: str) -> set[dt.date]:
    """Dates written in the common English and ISO forms."""
    t = text.casefold()
    found: set[dt.date | None] = set()
    for y, m, d in re.findall(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", t):
        found.add(_date(int(y), int(m), int(d)))
    for d, mon, y in re.findall(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?\s+({_MONTH_RE})\.?,?\s+(\d{{4}})\b", t):
        found.add(_date(int(y), _MONTHS[mon], int(d)))
    for mon, d, y in re.findall(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", t):
        found.add(_date(int(y), _MONTHS[mon], int(d)))
    for a, b, y in re.findall(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4})\b", t):
        found.add(_date(int(y), int(a), int(b)))  # US order
        found.add(_date(int(y), int(b), int(a)))  # European order
    found.discard(None)
    return found  # type: ignore[return-value]


@dataclass
class Discrepancy:
    field: str
    value: Any
    reason: str

    def describe(self) -> str:
        return f"{self.field} = {self.value!r}: {self.reason}"


class SourceIndex:
    """The source text, pre-normalised for fast look-ups."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.norm = f" {_norm_text(text)} "
        self.numbers: set[float] = set()
        for m in _NUMBER_RE.finditer(text):
            values = _parse_number(m.group())
            tail = text[m.end(): m.end() + 10].strip().casefold()
            scale = next((f for word, f in _SCALE.items() if re.match(rf"{word}\b", tail)), None)
            for v in values:
                self.numbers.add(v)
                if scale:
                    self.numbers.add(v * scale)
        self.dates = parse_dates(text)
        self.currencies = {code for sym, code in _CURRENCY_SYMBOLS.items() if sym in text.casefold()}

    def supports_number(self, value: float) -> bool:
        return any(abs(value - n) <= 1e-9 * max(1.0, abs(n)) for n in self.numbers)

    def supports_string(self, value: str) -> bool:
        norm = _norm_text(value)
        if not norm:
            return False
        if f" {norm} " in self.norm:
            return True
        value_dates = parse_dates(value)
        if value_dates and value_dates <= self.dates:
            return True
        return norm in self.currencies

    def check(self, field: str, value: Any) -> Discrepancy | None:
        if isinstance(value, bool) or value is None:
            return None if value is not None else Discrepancy(field, value, "no value was extracted")
        if isinstance(value, (int, float)):
            if self.supports_number(float(value)):
                return None
            near = ", ".join(f"{n:g}" for n in sorted(self.numbers)[:12]) or "none"
            return Discrepancy(field, value, f"this number is not in the text (numbers in the text: {near})")
        if isinstance(value, str):
            if self.supports_string(value):
                return None
            if not value.strip():
                return Discrepancy(field, value, "the value is empty")
            return Discrepancy(field, value, "this text does not appear in the source")
        return None


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for k, v in data.items():
            out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(data, list):
        out = []
        for i, v in enumerate(data):
            out += _leaves(v, f"{prefix}[{i}]")
        return out
    return [(prefix, data)]


def find_unsupported(data: dict[str, Any], source: SourceIndex) -> list[Discrepancy]:
    """Every leaf value of ``data`` that the source text does not support."""
    found = []
    for field, value in _leaves(data):
        problem = source.check(field, value)
        if problem is not None:
            found.append(problem)
    return found
