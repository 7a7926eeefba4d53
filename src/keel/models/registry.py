"""Build providers from settings: one place that knows every provider's constructor."""

from __future__ import annotations

from ..config import ModelConfig, Settings
from ..errors import ConfigError, MissingDependency
from .base import Provider
from .fake import FakeProvider

__all__ = ["build_provider", "build_providers"]


def build_provider(name: str, cfg: ModelConfig) -> Provider:
    if cfg.provider == "local":
        from .local import LocalProvider

        return LocalProvider(name=name, path=cfg.path, context_window=cfg.context_window, n_threads=cfg.n_threads)
    if cfg.provider == "fake":
        return FakeProvider(cfg.replies, name=name, repeat_last=True)
    key = cfg.api_key(name)
    secret = key.get_secret_value() if key else None
    if cfg.provider == "openai":
        if not cfg.model:
            raise ConfigError(f"model {name!r} needs `model:` (the server's model name)")
        from .openai_compat import OpenAIProvider

        if secret is None and cfg.base_url is None:
            raise ConfigError(
                f"model {name!r} talks to api.openai.com but names no api_key_env",
                hint="add api_key_env: OPENAI_API_KEY, or base_url: for a local server",
            )
        return OpenAIProvider(name=name, model=cfg.model, base_url=cfg.base_url, api_key=secret,
                              context_window=cfg.context_window)
    if cfg.provider == "anthropic":
        try:
            from .anthropic_provider import AnthropicProvider
        except ImportError:  # pragma: no cover - pinned dependency
            raise MissingDependency("the anthropic SDK", "anthropic") from None
        return AnthropicProvider(name=name, model=cfg.model, api_key=secret, base_url=cfg.base_url,
                                 context_window=cfg.context_window, max_output_tokens=cfg.max_output_tokens)
    raise ConfigError(f"unknown provider {cfg.provider!r} for model {name!r}")


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Providers for every model named in a role chain (built lazily: no model is loaded here)."""
    names = {n for chain in settings.roles.values() for n in chain}
    return {name: build_provider(name, settings.model(name)) for name in sorted(names)}
