"""Cost in USD for a call, offline.

Order: prices configured on the model (USD per million tokens), then the
``genai-prices`` snapshot that ships in the package (no network: we never ask
it to update), then zero for the local model. An unknown remote model costs
zero but is reported as unpriced, so a budget never silently trusts it: the
gateway reserves an unbounded worst case for it, which a budget that applies
refuses with a ConfigError asking for the model's prices.
"""

from __future__ import annotations

import functools
import warnings

from ..config import ModelConfig
from .base import Usage

__all__ = ["Pricer"]

_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic"}


class Pricer:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @property
    def is_priced(self) -> bool:
        cfg = self.config
        if cfg.provider in ("local", "fake") or cfg.input_price_per_mtok is not None:
            return True
        return cfg.output_price_per_mtok is not None or self._lookup() is not None

    def cost(self, usage: Usage) -> float:
        cfg = self.config
        if cfg.input_price_per_mtok is not None or cfg.output_price_per_mtok is not None:
            # configured prices are flat: cached input tokens are charged like the rest
            return (
                usage.input_tokens * (cfg.input_price_per_mtok or 0.0)
                + usage.output_tokens * (cfg.output_price_per_mtok or 0.0)
            ) / 1_000_000
        if cfg.provider in ("local", "fake"):
            return 0.0
        return _genai_price(
            cfg.provider, cfg.model, usage.input_tokens, usage.output_tokens, usage.cached_tokens,
            usage.cache_write_tokens,
        ) or 0.0

    def _lookup(self) -> float | None:
        return _genai_price(self.config.provider, self.config.model, 1_000_000, 0, 0, 0)

    def cost_per_mtok(self, kind: str) -> float:
        """USD per million input or output tokens (0 when unknown)."""
        usage = Usage(input_tokens=1_000_000) if kind == "input" else Usage(output_tokens=1_000_000)
        return self.cost(usage)

    def worst_case(self, input_tokens: int, max_output_tokens: int) -> float:
        """The most a call could cost: every input token uncached, every output token used."""
        return self.cost(Usage(input_tokens=input_tokens, output_tokens=max_output_tokens))


@functools.lru_cache(maxsize=4096)
def _genai_price(provider: str, model: str, inp: int, out: int, cached: int, written: int) -> float | None:
    try:
        import genai_prices
    except ImportError:  # pragma: no cover - a pinned dependency
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usage = genai_prices.Usage(
            input_tokens=inp, output_tokens=out, cache_read_tokens=cached or None, cache_write_tokens=written or None
        )
        try:
            result = genai_prices.calc_price(usage, model, provider_id=_PROVIDER_IDS.get(provider, provider))
        except LookupError:
            return None
    return float(result.total_price)
