"""Prompts: versioned template files, sandboxed rendering, per-query few-shot examples."""

from .fewshot import FewShotSelector, load_examples
from .library import PromptLibrary, PromptTemplate, Rendered

__all__ = ["FewShotSelector", "PromptLibrary", "PromptTemplate", "Rendered", "load_examples"]
