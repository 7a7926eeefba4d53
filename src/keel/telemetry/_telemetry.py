"""``Telemetry``: the monitoring half of an App, built from ``telemetry:`` settings.

It owns the telemetry database (trace store, costs, feedback, audit ledger),
the metrics registry and the alert rules, and plugs into a gateway as one
observer (costs + metrics + alerts per model attempt) after routing
OpenTelemetry spans to the trace store (and OTLP, if configured).
Everything that touches the database is built on first use.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from ..config import Settings
from ..models.gateway import CallRecord, Gateway
from . import _writer
from ._db import default_url, open_engine
from ._writer import BatchWriter
from .alerts import build_alerts
from .audit import AuditLedger
from .costs import CostStore
from .feedback import FeedbackStore
from .metrics import Metrics
from .traces import StoreSpanProcessor, TraceStore
from .tracing import setup_tracing

__all__ = ["Telemetry", "no_audit"]

_writers: dict[str, BatchWriter] = {}
_guard = threading.Lock()
#: how often a long-running process applies trace and audit retention (also done when a store opens)
RETENTION_EVERY_S = 3600.0


def no_audit(event: str, data: dict[str, Any]) -> None:
    """The audit callable when the ledger is switched off (telemetry.audit.enabled: false)."""
    return None


def _writer_for(url: str) -> BatchWriter:
    with _guard:
        if url not in _writers:
            _writers[url] = BatchWriter(open_engine(url))
        return _writers[url]


class Telemetry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.telemetry
        self.url = self.config.database_url or default_url(settings.data_dir)
        self.metrics = Metrics()
        self.alerts = build_alerts(settings, self.metrics)
        if self.config.trace_retention_days is not None or self.config.audit.retention_days is not None:
            _writer.every(RETENTION_EVERY_S, self.apply_retention)  # a server would otherwise prune once

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @functools.cached_property
    def writer(self) -> BatchWriter:
        return _writer_for(self.url)

    @property
    def engine(self) -> Any:
        return self.writer.engine

    @functools.cached_property
    def traces(self) -> TraceStore:
        store = TraceStore(self.engine, self.writer)
        if self.config.trace_retention_days is not None:
            store.prune(time.time() - self.config.trace_retention_days * 86400)
        return store

    def apply_retention(self) -> None:
        """Delete traces and audit records older than their retention settings (the stores do it when
        they open; the background writer calls this every RETENTION_EVERY_S for long-running processes)."""
        if self.config.trace_retention_days is not None:
            opened = "traces" in self.__dict__
            store = self.traces  # opening the store prunes it: only an open one is pruned again
            if opened:
                store.prune(time.time() - self.config.trace_retention_days * 86400)
        if self.config.audit.enabled and self.config.audit.retention_days is not None:
            opened = "audit" in self.__dict__
            ledger = self.audit  # likewise
            if opened:
                ledger.prune()

    @functools.cached_property
    def costs(self) -> CostStore:
        return CostStore(self.engine, self.writer)

    @functools.cached_property
    def feedback(self) -> FeedbackStore:
        return FeedbackStore(self.engine, self.traces, on_vote=self.metrics.observe_vote)

    @functools.cached_property
    def audit(self) -> AuditLedger:
        ledger = AuditLedger(self.engine, self.config.audit, context={"config_hash": self.settings.fingerprint()})
        ledger.prune()
        return ledger

    @property
    def audit_hook(self) -> Any:
        """What the graph calls as ``audit(event, data)``: the ledger, which queues records for the
        background writer and writes approvals at once (see :mod:`keel.telemetry.audit`)."""
        return self.audit if self.config.audit.enabled else no_audit

    def setup_tracing(self) -> None:
        """Route OpenTelemetry spans to this trace store (and OTLP); idempotent."""
        processor = StoreSpanProcessor(lambda: self.writer) if self.enabled else None
        setup_tracing(self.config, processor, key=self.url)

    def observe(self, record: CallRecord) -> None:
        """Gateway observer: cost row, metrics and alert rules for one attempt."""
        self.costs.record(record)
        self.metrics.observe_call(record)
        self.alerts.observe(record)

    def observe_answer(self, answer: Any) -> Any:
        """Count one finished request (route, status, latency, guardrail verdict) in the metrics.

        Takes the graph's Answer (or anything with ``route``, ``status``, ``latency_ms`` and a
        ``guardrail`` dict) and returns it, so ``return telemetry.observe_answer(answer)`` reads well.
        """
        if self.enabled:
            route = answer.route or "none"
            self.metrics.observe_request(route, answer.status, answer.latency_ms / 1000.0)
            self.metrics.observe_route(route)
            verdict = (answer.guardrail or {}).get("verdict")
            if verdict:
                self.metrics.observe_guardrail(str(verdict))
        return answer

    def observe_failure(self, exc: BaseException) -> None:
        """Count one request that raised instead of answering: status ``error``, with the route and
        latency the runtime put on the exception (``keel_run``); route ``none`` and latency 0 when
        it failed before the run began (a rejected question)."""
        if self.enabled:
            run = getattr(exc, "keel_run", None) or {}
            route = run.get("route") or "none"
            self.metrics.observe_request(route, "error", float(run.get("latency_ms", 0.0)) / 1000.0)
            if run.get("route"):  # the router had decided before the run failed
                self.metrics.observe_route(route)

    def attach(self, gateway: Gateway) -> Gateway:
        """Trace and account every call of ``gateway`` (no-op while telemetry is off)."""
        self.setup_tracing()
        if self.enabled and self.observe not in gateway.observers:
            gateway.observers.append(self.observe)
        return gateway

    def close(self) -> None:
        """At shutdown: write everything queued and stop the alert re-check thread (after its webhooks)."""
        self.flush()
        self.alerts.close()

    def flush(self) -> None:
        """Write everything queued (spans, cost rows, audit records) and wait for alert webhooks."""
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()
        if "writer" in self.__dict__:
            self.writer.flush()
        if "audit" in self.__dict__:
            self.audit.flush()
        self.alerts.wait()
