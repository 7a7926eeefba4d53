"""Structured output: schemas, validation with re-ask, and checks against the source."""

from .extract import ExtractResult, extract
from .schema import OutputSchema, SchemaMismatch, load_schema
from .verify import Discrepancy, SourceIndex, find_unsupported

__all__ = [
    "Discrepancy",
    "ExtractResult",
    "OutputSchema",
    "SchemaMismatch",
    "SourceIndex",
    "extract",
    "find_unsupported",
    "load_schema",
]
