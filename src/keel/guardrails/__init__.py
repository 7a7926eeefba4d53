"""Guardrails: the input guard before the router, the quality guard before the answer."""

from .grounding import Grounding, SentenceSupport, content_words, relevance, score_groundedness, split_sentences
from .input_guard import InputVerdict, scan_input, validate_question
from .leaks import Finding, find_pii, find_secrets, redact
from .quality import Check, QualityGuard, QualityReport, extractive_answer, is_non_answer, without_repeats

__all__ = [
    "Check",
    "Finding",
    "Grounding",
    "InputVerdict",
    "QualityGuard",
    "QualityReport",
    "SentenceSupport",
    "content_words",
    "relevance",
    "extractive_answer",
    "find_pii",
    "find_secrets",
    "is_non_answer",
    "redact",
    "scan_input",
    "score_groundedness",
    "split_sentences",
    "validate_question",
    "without_repeats",
]
