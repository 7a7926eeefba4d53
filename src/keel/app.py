"""``keel.App``: the object the CLI, the HTTP server and users' own code share.

It owns the settings and builds each subsystem once, lazily, on first use:
nothing heavy (a model, a store) is loaded until a call needs it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .config import Settings, load_settings
from .models.base import Provider
from .models.cache import SQLiteCache
from .models.gateway import BudgetHook, Gateway
from .models.registry import build_providers
from .structured import ExtractResult, OutputSchema, extract

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["App"]


class App:
    """keel, configured. ``App()`` uses keel.yaml if present, else the defaults."""

    def __init__(self, config: str | Path | Settings | None = None, *,
                 providers: dict[str, Provider] | None = None, **overrides: Any) -> None:
        self.settings = config if isinstance(config, Settings) else load_settings(config, **overrides)
        self._providers = providers

    # -- subsystems (built once, on first use) -------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @functools.cached_property
    def providers(self) -> dict[str, Provider]:
        built = build_providers(self.settings) if self._providers is None else {}
        return {**built, **(self._providers or {})}

    @functools.cached_property
    def gateway(self) -> Gateway:
        cache = None
        if self.settings.gateway.cache.enabled:
            cache = SQLiteCache(self.data_dir / "cache.sqlite3", ttl_s=self.settings.gateway.cache.ttl_s)
        gateway = Gateway.from_settings(self.settings, self.providers, cache=cache, budget=self.budget)
        return self.telemetry.attach(gateway)

    @functools.cached_property
    def telemetry(self) -> Telemetry:
        """Traces, costs, feedback, audit ledger, metrics and alerts (``telemetry:`` settings)."""
        from .telemetry import Telemetry

        telemetry = Telemetry(self.settings)
        telemetry.setup_tracing()  # spans made from now on (graph nodes too) land in this App's store
        return telemetry

    @functools.cached_property
    def budget(self) -> BudgetHook:
        """The gateway's budget hook (``budgets:`` settings); a no-op when no limit is set."""
        from .telemetry.budgets import build_budgets

        return build_budgets(self.settings, on_reject=self.telemetry.metrics.observe_budget_rejection)

    @property
    def audit(self) -> Callable[[str, dict[str, Any]], None]:
        """The graph's ``audit(event, data)``: appends one record to the hash-chained ledger."""
        return self.telemetry.audit_hook  # type: ignore[no-any-return]

    # -- jobs ------------------------------------------------------------------------

    def extract(self, text: str, schema: type[BaseModel] | dict[str, Any] | OutputSchema, *,
                role: str = "chat") -> ExtractResult:
        """Turn ``text`` into data that fits ``schema``, each value checked against the text."""
        return extract(text, schema, self.gateway, role=role, max_reasks=self.settings.structured.max_reasks)

    def models_status(self) -> list[dict[str, Any]]:
        """Each configured model: provider, availability, context size and prices."""
        from .models.pricing import Pricer

        rows = []
        for name, cfg in self.settings.models.items():
            row: dict[str, Any] = {"name": name, "provider": cfg.provider, "model": cfg.model,
                                   "roles": [r for r, chain in self.settings.roles.items() if name in chain]}
            try:
                from .models.registry import build_provider

                provider = self.providers.get(name) or build_provider(name, cfg)
                ok, detail = provider.available()
                row.update(available=ok, detail=detail, context_window=provider.context_window)
            except Exception as exc:  # a model that cannot even be built is reported, not fatal
                row.update(available=False, detail=str(exc), context_window=cfg.context_window)
            pricer = Pricer(cfg)
            row["input_price_per_mtok"] = round(pricer.cost_per_mtok("input"), 6)
            row["output_price_per_mtok"] = round(pricer.cost_per_mtok("output"), 6)
            row["priced"] = pricer.is_priced
            rows.append(row)
        return rows
