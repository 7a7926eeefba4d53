"""Secrets and personal data in text: found by pattern, checked where possible.

Used twice: on the question (a pasted API key never reaches a model) and on
the answer (a key or someone's details that the question did not contain is a
leak). Card numbers must pass the Luhn check, so order numbers do not trip it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Finding", "find_pii", "find_secrets", "new_findings", "redact"]

_SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "anthropic_key": re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    "openai_key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    "github_token": re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}"),
    "slack_token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "password_assignment": re.compile(r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}"),
}
_PII_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "us_ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "card_number": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "phone": re.compile(r"(?<![\w.])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b"),
}


@dataclass(frozen=True)
class Finding:
    kind: str
    value: str

    def describe(self) -> str:
        shown = self.value[:4] + "…" if len(self.value) > 6 else "…"
        return f"{self.kind} ({shown})"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _scan(text: str, patterns: dict[str, re.Pattern[str]]) -> list[Finding]:
    """Matches in pattern order; a match inside an earlier one (a "phone" inside a card) is skipped."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in patterns.items():
        for m in pattern.finditer(text):
            value = m.group(0)
            if kind == "card_number":
                digits = re.sub(r"\D", "", value)
                if not (13 <= len(digits) <= 19 and _luhn(digits)):
                    continue
            if any(a <= m.start() and m.end() <= b for a, b in taken):
                continue
            taken.append(m.span())
            found.append(Finding(kind, value))
    return found


def find_secrets(text: str) -> list[Finding]:
    return _scan(text, _SECRET_PATTERNS)


def find_pii(text: str) -> list[Finding]:
    return _scan(text, _PII_PATTERNS)


def new_findings(answer: list[Finding], question: str) -> list[Finding]:
    """Findings in the answer that the asker did not supply themselves."""
    return [f for f in answer if f.value not in question]


def redact(text: str, findings: list[Finding]) -> str:
    for f in sorted(findings, key=lambda f: -len(f.value)):
        text = text.replace(f.value, f"[redacted {f.kind}]")
    return text
