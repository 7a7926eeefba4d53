"""Prometheus metrics in keel's own registry (not the process-global one).

Its own registry so two Apps in one process (and tests) never collide, and so
the server exposes exactly keel's series. The gateway feeds model-call series
through :meth:`Metrics.observe_call`; the graph reports requests, routes and
guardrail verdicts; budgets report rejections; alerts report what is firing.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..models.gateway import CallRecord

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter("keel_requests", "Answered requests", ["route", "status"], registry=r)
        self.request_latency = Histogram(
            "keel_request_latency_seconds",
            "End-to-end request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_calls = Counter("keel_model_calls", "Model call attempts", ["model", "outcome"], registry=r)
        self.model_latency = Histogram(
            "keel_model_latency_seconds",
            "Model call latency",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("keel_tokens", "Tokens used", ["model", "kind"], registry=r)
        self.cost = Counter("keel_cost_usd", "Spend in USD", ["model"], registry=r)
        self.cache_hits = Counter("keel_cache_hits", "Response cache hits", ["model"], registry=r)
        self.routes = Counter("keel_routes", "Router decisions", ["route"], registry=r)
        self.guardrail = Counter("keel_guardrail_verdicts", "Guardrail verdicts", ["verdict"], registry=r)
        self.budget_rejections = Counter("keel_budget_rejections", "Calls refused by a budget", ["scope"], registry=r)
        self.feedback = Counter("keel_feedback", "Thumbs up or down on answers", ["rating", "route"], registry=r)
        self.alerts_firing = Gauge(
            "keel_alerts_firing", "1 while an alert rule's condition holds", ["rule"], registry=r
        )
        self.alerts_fired = Counter("keel_alerts_fired", "Alert notifications sent", ["rule"], registry=r)
        self.alert_checks_skipped = Counter(
            "keel_alert_checks_skipped",
            "Model calls not checked against the alert rules: the shared alert store was unreachable",
            registry=r,
        )
        self._per_model: dict[str, tuple[Any, ...]] = {}
        self._children_cache: dict[tuple[Any, ...], Any] = {}

    def observe_call(self, record: CallRecord) -> None:
        """Gateway observer: one attempt's outcome, latency, tokens and cost."""
        model = record.model
        if record.cached:
            self.cache_hits.labels(model).inc()
            self.model_calls.labels(model, "cached").inc()
            return
        if not record.ok:
            self.model_calls.labels(model, record.error or "error").inc()
            self.model_latency.labels(model).observe(record.latency_ms / 1000.0)
            return
        ok, latency, tokens_in, tokens_out, cost = self._children(model)
        ok.inc()
        latency.observe(record.latency_ms / 1000.0)
        tokens_in.inc(record.usage.input_tokens)
        tokens_out.inc(record.usage.output_tokens)
        cost.inc(record.cost_usd)

    def _children(self, model: str) -> tuple[Any, ...]:
        """The labelled series of a model's successful calls, looked up once (labels() is not free)."""
        found = self._per_model.get(model)
        if found is None:
            found = self._per_model[model] = (
                self.model_calls.labels(model, "ok"),
                self.model_latency.labels(model),
                self.tokens.labels(model, "input"),
                self.tokens.labels(model, "output"),
                self.cost.labels(model),
            )
        return found

    def observe_request(self, route: str, status: str, latency_s: float) -> None:
        self._child(self.requests, route, status).inc()
        self._child(self.request_latency, route).observe(latency_s)

    def observe_route(self, route: str) -> None:
        self._child(self.routes, route).inc()

    def observe_guardrail(self, verdict: str) -> None:
        self._child(self.guardrail, verdict).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: every request reports a handful of these."""
        key = (id(metric), *labels)
        child = self._children_cache.get(key)
        if child is None:
            child = self._children_cache[key] = metric.labels(*labels)
        return child

    def observe_vote(self, rating: str, route: str | None) -> None:
        """A thumbs up or down: Prometheus can then alert on the share of down-votes."""
        self.feedback.labels(rating, route or "unknown").inc()

    def observe_budget_rejection(self, scope: str) -> None:
        self.budget_rejections.labels(scope).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition (serve with content type ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)
