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

from ._cancel import CancelToken
from .config import Settings, load_settings
from .models.base import Provider
from .models.cache import build_cache
from .models.gateway import BudgetHook, Gateway
from .models.registry import build_providers
from .structured import ExtractResult, OutputSchema, extract

if TYPE_CHECKING:
    from .graph import Answer, GraphRuntime
    from .jobs import JobQueue
    from .knowledge import IngestReport, KnowledgeBase, SearchHit, SearchMode
    from .knowledge.ingest import Progress
    from .prompts import CuratedExamples
    from .telemetry import Telemetry
    from .tools import Approval

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
        """Every model call goes through it; its response cache is ``gateway.cache.backend``."""
        cache = build_cache(self.settings.gateway.cache, self.data_dir)
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
        """The graph's ``audit(event, data)``: one hash-chained ledger record (queued; approvals written at once)."""
        return self.telemetry.audit_hook  # type: ignore[no-any-return]

    @functools.cached_property
    def runtime(self) -> GraphRuntime:
        """The request graph (router, fast path, agent loop, guards), wired to this App's
        gateway, audit ledger and knowledge base (through ``App.search`` when it exists)."""
        from .graph import build_runtime
        from .graph.factory import SearchFunctionRetriever

        search = getattr(self, "search", None)
        retriever = SearchFunctionRetriever(search) if callable(search) else None
        return build_runtime(self.settings, self.gateway, retriever=retriever, audit=self.audit,
                             curated=self.curated_examples)

    @functools.cached_property
    def curated_examples(self) -> CuratedExamples | None:
        """Up-voted answers a curator accepted (``keel curation accept``), shown in the fast path's
        answer prompts when a question is like theirs (``prompts:`` settings); None when switched off."""
        from .prompts import CuratedExamples

        config = self.settings.prompts
        if not config.curated_examples:
            return None
        return CuratedExamples(
            lambda: self.telemetry.feedback.few_shot_examples(),
            k=config.curated_examples,
            min_similarity=config.curated_min_similarity,
            refresh_s=config.curated_refresh_s,
        )

    # -- the request graph -------------------------------------------------------------

    def ask(self, question: str, *, kb: str | None = None, session: str | None = None, user: str | None = None,
            schema: dict[str, Any] | None = None, tenant: str | None = None,
            cancel: CancelToken | None = None) -> Answer:
        """Answer through the graph; the Answer's status says answered, pending_approval or stopped.
        ``user`` and ``tenant`` scope budgets and costs (``budgets:``) and are named in the audit ledger.
        Setting ``cancel`` (from another thread) stops the run at its next node, model or tool call:
        a stopped answer whose error is ``cancelled``.
        A run that raises ends the ledger with a ``failed`` record and counts as status ``error``."""
        try:
            answer = self.runtime.ask(question, kb=kb, session=session, user=user, schema=schema, tenant=tenant,
                                      cancel=cancel)
        except Exception as exc:  # counted (status "error"), then raised as it was
            self.telemetry.observe_failure(exc)
            raise
        return self.telemetry.observe_answer(answer)  # type: ignore[no-any-return]

    def approve(self, approval_id: str, *, by: str, cancel: CancelToken | None = None) -> Answer:
        """A person approves a paused tool call; the run resumes and finishes (``cancel``: as in ``ask``)."""
        return self.runtime.resume(approval_id, approve=True, approver=by, cancel=cancel)

    def reject(self, approval_id: str, *, by: str, reason: str | None = None,
               cancel: CancelToken | None = None) -> Answer:
        """A person rejects a paused tool call; the run resumes without it (``cancel``: as in ``ask``)."""
        return self.runtime.resume(approval_id, approve=False, approver=by, reason=reason, cancel=cancel)

    def approvals(self, status: str | None = None) -> list[Approval]:
        """Recorded approvals (expired ones marked so), oldest first."""
        return self.runtime.deps.approvals.list(status)  # type: ignore[arg-type]

    # -- the knowledge base ------------------------------------------------------------

    @functools.cached_property
    def knowledge(self) -> KnowledgeBase:
        """Every named knowledge base under the data dir; opening it takes the store's lock.
        Its catalog is where :func:`~keel.knowledge.catalog.catalog_url` says (PostgreSQL in scale mode)."""
        from .knowledge import KnowledgeBase
        from .knowledge.catalog import catalog_url

        knowledge = self.settings.knowledge.model_copy(update={"catalog_url": catalog_url(self.settings)})
        return KnowledgeBase(knowledge, self.data_dir)

    def ingest(self, paths: list[str | Path], *, kb: str | None = None,
               progress: Progress | None = None) -> IngestReport:
        """Load, chunk, embed and store files and folders; unreadable files are listed in ``failed``."""
        return self.knowledge.ingest(paths, kb=kb, progress=progress)

    def ingest_demo(self, *, kb: str | None = None, progress: Progress | None = None) -> IngestReport:
        """The demo knowledge base: the Python language reference shipped with CPython."""
        from .knowledge import demo_documents

        docs = demo_documents()
        return self.knowledge.ingest_documents(docs, kb=kb, total=len(docs), progress=progress)

    def search(self, query: str, *, kb: str | None = None, k: int = 5, where: dict[str, Any] | None = None,
               mode: SearchMode = "hybrid") -> list[SearchHit]:
        """The ``k`` chunks that best answer ``query`` (hybrid: vectors and keywords fused)."""
        return self.knowledge.search(query, kb=kb, k=k, where=where, mode=mode)

    # -- jobs ------------------------------------------------------------------------

    @functools.cached_property
    def jobs(self) -> JobQueue:
        """Background jobs (``jobs:`` settings): ``submit(kind, payload)``, ``get(id)``, ``list()``;
        ``start()`` runs the embedded workers in this process (a server calls it)."""
        from .jobs import JobQueue

        return JobQueue(self)

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
