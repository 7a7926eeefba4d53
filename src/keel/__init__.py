"""keel: the production runtime for LLM applications."""

from ._cancel import CancelToken
from .app import App
from .config import Settings, load_settings
from .errors import (
    ApprovalRequired,
    BudgetExceeded,
    Cancelled,
    ConfigError,
    GuardrailBlocked,
    InputError,
    KeelError,
    LimitExceeded,
    ModelError,
    RetrievalError,
    UserError,
    ValidationFailed,
)
from .structured import ExtractResult, OutputSchema

__all__ = [
    "Answer",
    "App",
    "ApprovalRequired",
    "BudgetExceeded",
    "CancelToken",
    "Cancelled",
    "ConfigError",
    "ExtractResult",
    "GuardrailBlocked",
    "IngestReport",
    "InputError",
    "KeelError",
    "LimitExceeded",
    "ModelError",
    "OutputSchema",
    "RetrievalError",
    "SearchHit",
    "Settings",
    "UserError",
    "ValidationFailed",
    "load_settings",
]

# heavier types load on first use, so `import keel` (and every CLI start) stays quick
_LAZY = {"Answer": "keel.graph", "IngestReport": "keel.knowledge", "SearchHit": "keel.knowledge"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
