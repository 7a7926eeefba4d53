"""keel: the production runtime for LLM applications."""

from .app import App
from .config import Settings, load_settings
from .errors import (
    ApprovalRequired,
    BudgetExceeded,
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
    "App",
    "ApprovalRequired",
    "BudgetExceeded",
    "ConfigError",
    "ExtractResult",
    "GuardrailBlocked",
    "InputError",
    "KeelError",
    "LimitExceeded",
    "ModelError",
    "OutputSchema",
    "RetrievalError",
    "Settings",
    "UserError",
    "ValidationFailed",
    "load_settings",
]
