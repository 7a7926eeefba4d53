"""The input guard: what a question must not be, checked before any model sees it.

Blocks: secrets pasted into the question (they would be sent to a model, maybe
a remote one) and the operator's own ``block_patterns``. Flags, for the audit:
personal data and common prompt-injection phrasing. An empty or over-long
question is the caller's mistake and raises ``InputError`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..config import GuardrailSettings
from ..errors import ConfigError, InputError
from .leaks import find_pii, find_secrets

__all__ = ["InputVerdict", "scan_input", "validate_question"]

_INJECTION = re.compile(
    r"(?i)\b(ignore (all |any )?(previous|prior|above) (instructions|rules)|reveal (your|the) system prompt|"
    r"you are now (in )?developer mode|the user (has )?approved|approval (is )?granted)\b"
)


@dataclass
class InputVerdict:
    blocked: bool
    reason: str = ""
    flags: list[str] = field(default_factory=list)


def validate_question(question: str, settings: GuardrailSettings) -> str:
    text = (question or "").strip()
    if not text:
        raise InputError("the question is empty", hint='ask something, e.g. keel ask "what does yield do?"')
    if len(text) > settings.max_input_chars:
        raise InputError(
            f"the question is {len(text)} characters, over the limit of {settings.max_input_chars}",
            hint="shorten it, or raise guardrails.max_input_chars in keel.yaml",
        )
    return text


def scan_input(question: str, settings: GuardrailSettings) -> InputVerdict:
    secrets = find_secrets(question)
    if secrets:
        kinds = ", ".join(sorted({f.kind for f in secrets}))
        return InputVerdict(True, f"the question contains a secret ({kinds}); remove it and ask again")
    for pattern in settings.block_patterns:
        try:
            if re.search(pattern, question, re.I):
                return InputVerdict(True, f"the question matches the blocked pattern {pattern!r}")
        except re.error as exc:
            raise ConfigError(
                f"guardrails.block_patterns: {pattern!r} is not a regular expression: {exc}",
                hint="fix the pattern in keel.yaml",
            ) from None
    flags = sorted({f"pii:{f.kind}" for f in find_pii(question)})
    if _INJECTION.search(question):
        flags.append("prompt_injection")
    return InputVerdict(False, "", flags)
