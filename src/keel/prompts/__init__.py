"""Prompts: versioned template files, sandboxed rendering, per-query few-shot examples."""

from .curated import CuratedExamples
from .fewshot import FewShotSelector, load_examples
from .library import PromptLibrary, PromptTemplate, Rendered

__all__ = ["CuratedExamples", "FewShotSelector", "PromptLibrary", "PromptTemplate", "Rendered", "load_examples"]
