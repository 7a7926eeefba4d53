"""Alert rules over a sliding window of model calls: cost rate, errors, error rate.

Each rule is checked on every model call against the last ``window_s``
seconds, kept in memory with running sums, so a check is O(1) amortised.
A rule notifies once when its condition starts to hold (the log, the webhook,
the ``keel_alerts_firing`` gauge) and again only after it has cleared
(a "resolved" notice) and started to hold once more: one breach, one message.
Webhooks are posted on a background thread so a slow receiver never slows a
request.

``telemetry.alerts_backend`` says whose traffic a window holds:

- ``memory`` (the default, :class:`AlertManager`): this process's. In scale mode
  each replica would alert on its own traffic only, and each would notify.
- ``redis`` (:class:`keel.telemetry.alerts_redis.SharedAlertManager`): every
  replica's, in Redis at ``budgets.redis_url``; the windows are summed across
  replicas and the firing state is shared, so exactly one replica sends "firing"
  and exactly one sends "resolved". Use it with several ``keel serve`` replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import AlertRule, Settings
from ..models.gateway import CallRecord
from .metrics import Metrics

__all__ = ["AlertManager", "build_alerts", "rule_value"]

log = logging.getLogger("keel.alerts")


@dataclass
class _Window:
    span_s: float
    events: deque[tuple[float, float, bool]]
    cost: float = 0.0
    errors: int = 0

    def add(self, now: float, cost: float, ok: bool) -> None:
        self.events.append((now, cost, ok))
        self.cost += cost
        self.errors += 0 if ok else 1
        while self.events and self.events[0][0] < now - self.span_s:
            _, c, good = self.events.popleft()
            self.cost -= c
            self.errors -= 0 if good else 1


def rule_value(rule: AlertRule, calls: int, errors: int, cost: float) -> float | None:
    """What ``rule`` measures over a window of ``calls`` calls (``errors`` failed, ``cost`` USD);
    None for an error rate over fewer than ``min_calls`` calls."""
    if rule.metric == "cost_usd":
        return cost
    if rule.metric == "errors":
        return float(errors)
    if rule.metric == "calls":
        return float(calls)
    return errors / calls if calls >= rule.min_calls else None


class AlertManager:
    def __init__(
        self,
        rules: list[AlertRule],
        *,
        webhook_url: str | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        self.rules = rules
        self.webhook_url = webhook_url
        self.metrics = metrics
        self.clock = clock
        self.timeout_s = timeout_s
        self.firing: dict[str, bool] = {r.name: False for r in rules}
        self._windows = {r.name: _Window(r.window_s, deque()) for r in rules}
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []

    def observe(self, record: CallRecord) -> None:
        """Gateway observer: add the call to each rule's window and notify on a change of state."""
        if not self.rules or record.cached:
            return
        now = self.clock()
        changes = []
        with self._lock:
            for rule in self.rules:
                win = self._windows[rule.name]
                win.add(now, record.cost_usd, record.ok)
                value = rule_value(rule, len(win.events), win.errors, win.cost)
                holds = value is not None and value > rule.threshold
                if holds != self.firing[rule.name]:
                    self.firing[rule.name] = holds
                    changes.append((rule, holds, value))
        for rule, holds, value in changes:
            self._notify(rule, holds, value or 0.0, now)

    def _notify(self, rule: AlertRule, firing: bool, value: float, now: float) -> None:
        state = "firing" if firing else "resolved"
        payload: dict[str, Any] = {
            "alert": rule.name,
            "state": state,
            "metric": rule.metric,
            "value": round(value, 9),
            "threshold": rule.threshold,
            "window_s": rule.window_s,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        text = (
            f"keel alert {rule.name} {state}: {rule.metric}={value:.6g} over {rule.window_s:g}s "
            f"(threshold {rule.threshold:g})"
        )
        (log.warning if firing else log.info)(text)
        if self.metrics is not None:
            self.metrics.alerts_firing.labels(rule.name).set(1 if firing else 0)
            if firing:
                self.metrics.alerts_fired.labels(rule.name).inc()
        if self.webhook_url:
            payload["text"] = text
            sender = threading.Thread(target=self._post, args=(payload,), name="keel-alert", daemon=True)
            self._senders.append(sender)
            sender.start()

    def _post(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        try:
            httpx.post(self.webhook_url, json=payload, timeout=self.timeout_s).raise_for_status()
        except httpx.HTTPError as exc:
            log.error("keel alert %s: webhook %s failed: %s", payload["alert"], self.webhook_url, exc)

    def wait(self, timeout_s: float = 10.0) -> None:
        """Block until sent webhooks finished (for CLI exit and tests)."""
        for sender in self._senders:
            sender.join(timeout_s)
        self._senders = [s for s in self._senders if s.is_alive()]


def build_alerts(settings: Settings, metrics: Metrics | None = None) -> AlertManager:
    """The alert rules ``telemetry.alerts`` describes, over the windows ``telemetry.alerts_backend`` names."""
    config = settings.telemetry
    if config.alerts_backend == "redis" and config.alerts:
        from .alerts_redis import RedisAlertStore, SharedAlertManager

        store = RedisAlertStore(settings.budgets.redis_url)
        return SharedAlertManager(config.alerts, store, webhook_url=config.webhook_url, metrics=metrics)
    return AlertManager(config.alerts, webhook_url=config.webhook_url, metrics=metrics)
