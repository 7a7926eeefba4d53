"""Alert rules over a sliding window of model calls: cost rate, errors, error rate.

Each rule is checked on every model call against the last ``window_s``
seconds, kept in memory with running sums, so a check is O(1) amortised.
A rule notifies once when its condition starts to hold (the log, the webhook,
the ``keel_alerts_firing`` gauge) and again only after it has cleared
(a "resolved" notice) and started to hold once more: one breach, one message.
Webhooks are posted on a background thread so a slow receiver never slows a
request.

A rule also stops holding with no call at all: a spend spike followed by
silence, an outage that stopped every call. So each manager with rules has one
daemon thread (``keel-alert-recheck``) that re-checks the firing rules every
``telemetry.alerts_recheck_s`` seconds (default 5) against the window as of
then, adding no call: "resolved" comes at most that long after the window
clears, and the ``keel_alerts_firing`` gauge drops with it. The thread does not
touch the per-call path, holds its manager weakly (it ends with the manager, or
at :meth:`AlertManager.close`), never keeps a process alive, and is started
again in a forked child.

``telemetry.alerts_backend`` says whose traffic a window holds:

- ``memory`` (the default, :class:`AlertManager`): this process's. In scale mode
  each replica would alert on its own traffic only, and each would notify.
- ``redis`` (:class:`keel.telemetry.alerts_redis.SharedAlertManager`): every
  replica's, in Redis at ``budgets.redis_url``; the windows are summed across
  replicas and the firing state is shared, so exactly one replica sends "firing"
  and exactly one sends "resolved", on a call or on a re-check. Use it with
  several ``keel serve`` replicas.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import AlertRule, Settings
from ..models.gateway import CallRecord
from .metrics import Metrics

__all__ = ["RECHECK_S", "AlertManager", "build_alerts", "rule_value"]

log = logging.getLogger("keel.alerts")

#: seconds between re-checks of the firing rules when no setting says (``telemetry.alerts_recheck_s``)
RECHECK_S = 5.0


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
        # expire()'s loop, inlined: it runs for every rule on every model call (one call less, ~40 ns)
        while self.events and self.events[0][0] < now - self.span_s:
            _, c, good = self.events.popleft()
            self.cost -= c
            self.errors -= 0 if good else 1

    def expire(self, now: float) -> None:
        """Drop the calls that fell out of the window by ``now``, adding none (the re-check)."""
        while self.events and self.events[0][0] < now - self.span_s:
            _, c, good = self.events.popleft()
            self.cost -= c
            self.errors -= 0 if good else 1
        if not self.events:  # no float residue: an empty window costs exactly 0
            self.cost, self.errors = 0.0, 0


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
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.rules = rules
        self.webhook_url = webhook_url
        self.metrics = metrics
        self.clock = clock
        self.timeout_s = timeout_s
        #: seconds between re-checks of the firing rules by the ``keel-alert-recheck`` thread
        self.recheck_s = recheck_s
        self.firing: dict[str, bool] = {r.name: False for r in rules}
        self._windows = {r.name: _Window(r.window_s, deque()) for r in rules}
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []
        self._stop = threading.Event()
        self._rechecks: threading.Thread | None = None
        if rules:  # last: the thread may call recheck() from here on (subclasses set their state first)
            self._start_rechecks()

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

    def recheck(self) -> None:
        """Re-evaluate each firing rule against its window as of now, adding no call, and send
        "resolved" for those that stopped holding: the re-check thread's work."""
        if not any(self.firing.values()):
            return
        now = self.clock()
        resolved = []
        with self._lock:  # the lock observe() holds: a rule's change of state is seen by one of them
            for rule in self.rules:
                if self.firing[rule.name]:
                    win = self._windows[rule.name]
                    win.expire(now)
                    value = rule_value(rule, len(win.events), win.errors, win.cost)
                    if value is None or value <= rule.threshold:
                        self.firing[rule.name] = False
                        resolved.append((rule, value))
        for rule, value in resolved:
            self._notify(rule, False, value or 0.0, now)

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
            sender.start()  # before it is listed: wait() on another thread (the re-check's) must not join it unstarted
            self._senders.append(sender)

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

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the re-check thread and wait for sent webhooks. Optional: without it the thread
        ends by itself once the manager is garbage."""
        _live.discard(self)
        self._stop.set()
        if self._rechecks is not None:
            self._rechecks.join(timeout_s)
            self._rechecks = None
        self.wait(timeout_s)

    def _start_rechecks(self) -> None:
        self._stop = threading.Event()
        self._rechecks = threading.Thread(
            target=_recheck_every,
            args=(weakref.ref(self), self._stop, self.recheck_s),
            name="keel-alert-recheck",
            daemon=True,
        )
        self._rechecks.start()
        _live.add(self)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held one at the fork) and a re-check
        thread of its own (the parent's did not survive the fork)."""
        self._lock = threading.Lock()
        self._senders = []
        self._start_rechecks()


def _recheck_every(ref: weakref.ref[AlertManager], stop: threading.Event, every_s: float) -> None:
    """The re-check thread: the manager's ``recheck()`` every ``every_s`` seconds, until it is
    closed or garbage (the thread holds it only while re-checking)."""
    failing = False
    while not stop.wait(every_s):
        manager = ref()
        if manager is None:
            return
        try:
            manager.recheck()
        except Exception:  # the thread must outlive any failure; one log line per run of failures
            if not failing:
                log.exception("keel alerts: re-checking the firing rules failed; retrying every %gs", every_s)
            failing = True
        else:
            failing = False
        del manager


#: managers whose re-check thread runs; a forked child starts theirs again
_live: weakref.WeakSet[AlertManager] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for manager in list(_live):
        manager._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def build_alerts(settings: Settings, metrics: Metrics | None = None) -> AlertManager:
    """The alert rules ``telemetry.alerts`` describes, over the windows ``telemetry.alerts_backend`` names."""
    config = settings.telemetry
    given: dict[str, Any] = dict(webhook_url=config.webhook_url, metrics=metrics, recheck_s=config.alerts_recheck_s)
    if config.alerts_backend == "redis" and config.alerts:
        from .alerts_redis import RedisAlertStore, SharedAlertManager

        return SharedAlertManager(config.alerts, RedisAlertStore(settings.budgets.redis_url), **given)
    return AlertManager(config.alerts, **given)
