"""Alert rules over every replica's traffic: the windows and the firing state in Redis.

``telemetry.alerts_backend: redis`` (see :func:`keel.telemetry.alerts.build_alerts`).
Each window is a Redis hash of time buckets (``window_s / 60`` seconds each):
``<bucket>:n`` calls, ``<bucket>:e`` errors, ``<bucket>:c`` cost in 1e-9 USD.
One Lua script per model call adds the call to the current bucket of every
window, sums the buckets still inside it (dropping older ones) and reads the
rules' firing flags: one round trip. A window so spans the last ``window_s``
seconds to within one bucket (1/60 of it), and the sums cover every replica.

The flag of a rule changes only with ``SET flag new GET`` (atomic; the old value
says who changed it): when the replicas see a rule start or stop holding at once,
exactly one of them finds the old value different, and only it notifies.
Notices therefore alternate firing, resolved, firing across all replicas.
Each replica's ``keel_alerts_firing`` gauge follows the shared flag.

Between calls, every replica's re-check thread (see :mod:`keel.telemetry.alerts`)
runs the same script every ``telemetry.alerts_recheck_s`` seconds adding no call
(and leaving the windows' expiry alone): a rule flagged firing whose window has
cleared is set back with the same ``SET ... GET``, so "resolved" is sent once
across the replicas when traffic stops, even if the replica that fired is gone.
A re-check never starts a rule firing; only a call does.

Bucket numbers come from each replica's clock: keep the clocks in sync (NTP).

An unreachable Redis never fails a request: the call goes unchecked (counted in
``keel_alert_checks_skipped_total``), the outage is logged once, and the store is
tried again at most every ``retry_s`` seconds, so a hung Redis slows at most one
call per ``retry_s`` by ``timeout_s``. A re-check meeting an outage does nothing
(the same single log line; it is no skipped call) and the thread carries on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .._redis import Outage, connect
from ..config import AlertRule
from ..models.gateway import CallRecord
from .alerts import RECHECK_S, AlertManager, rule_value
from .budgets import NANO, to_nano
from .metrics import Metrics

__all__ = ["BUCKETS", "RedisAlertStore", "SharedAlertManager"]

log = logging.getLogger("keel.alerts")

#: buckets per window: the window's edge is exact to 1/BUCKETS of its length
BUCKETS = 60
#: what one run of the window script sees: each window's (calls, errors, cost USD), each rule's flag
Seen = tuple[list[tuple[int, int, float]], list[bool]]

_OBSERVE_LUA = """
-- KEYS: one hash per window, then one firing flag per rule
-- ARGV: cost (1e-9 USD), failed (0/1), add (1: count this call; 0: only read, as a re-check does),
--       then per window: current bucket, buckets per window, ttl ms
local cost, failed, add = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local windows = (#ARGV - 3) / 3
local out = {}
for w = 1, windows do
  local key = KEYS[w]
  -- the bucket's field names from its digits as sent: Lua would print a large number as 1e+14
  local label, n, ttl = ARGV[3 * w + 1], tonumber(ARGV[3 * w + 2]), ARGV[3 * w + 3]
  local now = tonumber(label)
  if add then
    redis.call('HINCRBY', key, label .. ':n', 1)
    if failed == 1 then redis.call('HINCRBY', key, label .. ':e', 1) end
    if cost > 0 then redis.call('HINCRBY', key, label .. ':c', ARGV[1]) end
  end
  local sums = {n = 0, e = 0, c = 0}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local bucket, kind = string.match(all[i], '^(-?%d+):(%a)$')
    if tonumber(bucket) <= now - n then
      redis.call('HDEL', key, all[i])
    else
      sums[kind] = sums[kind] + tonumber(all[i + 1])
    end
  end
  -- only a call extends a window's life: re-checks must not keep a quiet window from expiring
  if add then redis.call('PEXPIRE', key, ttl) end
  out[#out + 1] = sums.n
  out[#out + 1] = sums.e
  out[#out + 1] = sums.c
end
for i = windows + 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) == '1' and 1 or 0
end
return out
"""


class RedisAlertStore:
    """The shared windows and firing flags, under ``prefix`` in the Redis at ``url``."""

    def __init__(self, url: str, *, prefix: str = "keel:alerts:", timeout_s: float = 0.5, retry_s: float = 5.0) -> None:
        self.client, self._errors = connect(
            url, setting="budgets.redis_url", used_by="telemetry.alerts_backend: redis", timeout_s=timeout_s
        )
        self.url = url
        self.prefix = prefix
        self.outage = Outage(retry_s)
        self._observe = self.client.register_script(_OBSERVE_LUA)

    def window_key(self, window_s: float) -> str:
        return f"{self.prefix}window:{window_s!r}"

    def flag_key(self, rule: str) -> str:
        return f"{self.prefix}firing:{rule}"

    def observe(
        self, now: float, cost_usd: float, ok: bool, windows: list[float], rules: list[str]
    ) -> Seen | None:
        """Add one call to every window; its (calls, errors, cost USD) sums and every rule's flag.
        None while the store cannot be reached."""
        return self._window_script(now, [to_nano(cost_usd), 0 if ok else 1, 1], windows, rules)

    def sums(self, now: float, windows: list[float], rules: list[str]) -> Seen | None:
        """:meth:`observe` adding no call: every window's sums as of ``now`` and every rule's flag."""
        return self._window_script(now, [0, 0, 0], windows, rules)

    def _window_script(self, now: float, args: list[Any], windows: list[float], rules: list[str]) -> Seen | None:
        for span in windows:
            width = span / BUCKETS
            args += [math.floor(now / width), BUCKETS, math.ceil((span + width) * 1000)]
        keys = [self.window_key(w) for w in windows] + [self.flag_key(r) for r in rules]
        out = self._call(lambda: self._observe(keys=keys, args=args))
        if out is None:
            return None
        sums = [(int(out[i]), int(out[i + 1]), int(out[i + 2]) / NANO) for i in range(0, 3 * len(windows), 3)]
        return sums, [bool(f) for f in out[3 * len(windows) :]]

    def flip(self, changes: list[tuple[str, bool]]) -> list[bool] | None:
        """Set each rule's flag; True where this call changed it (the caller notifies), None while down."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for rule, firing in changes:
                pipe.set(self.flag_key(rule), "1" if firing else "0", get=True)
            return list(pipe.execute())

        old = self._call(run)
        if old is None:
            return None
        return [(before == b"1") != firing for before, (_, firing) in zip(old, changes, strict=True)]

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None without trying while the store is down (tried again every ``retry_s``)."""
        if self.outage.skip():
            return None
        try:
            result = fn()
        except self._errors as exc:
            if self.outage.failed():
                log.error(
                    "alert store at %s unavailable, model calls are not checked against alert "
                    "rules until it is back: %s",
                    self.url,
                    exc,
                )
            return None
        if self.outage.recovered():
            log.warning("alert store at %s is back, alert rules are checked again", self.url)
        return result


class SharedAlertManager(AlertManager):
    """:class:`AlertManager` whose windows and firing state every replica shares through Redis."""

    def __init__(
        self,
        rules: list[AlertRule],
        store: RedisAlertStore,
        *,
        webhook_url: str | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        recheck_s: float = RECHECK_S,
    ) -> None:
        # before the base class starts the re-check thread, which uses them
        self.store = store
        self._spans = sorted({r.window_s for r in rules})
        self._span_of = [self._spans.index(r.window_s) for r in rules]
        self._names = [r.name for r in rules]
        super().__init__(
            rules, webhook_url=webhook_url, metrics=metrics, clock=clock, timeout_s=timeout_s, recheck_s=recheck_s
        )

    def observe(self, record: CallRecord) -> None:
        """Gateway observer: add the call to the shared windows; notify if this replica changed a flag."""
        if not self.rules or record.cached:
            return
        now = self.clock()
        seen = self.store.observe(now, record.cost_usd, record.ok, self._spans, self._names)
        if seen is None or not self._settle(seen, now, may_fire=True):
            self._skipped()

    def recheck(self) -> None:
        """Re-evaluate the rules firing on any replica against the shared windows as of now, adding no
        call; the first replica to find one cleared sends "resolved" (the others follow). Every
        replica re-checks, whether or not it saw the rule fire, so its gauge follows the shared flag
        and a rule resolves even when the replica that fired it is gone. While Redis is down it
        does nothing (the store logs the outage once)."""
        now = self.clock()
        seen = self.store.sums(now, self._spans, self._names)
        if seen is not None:
            self._settle(seen, now, may_fire=False)

    def _settle(self, seen: Seen, now: float, *, may_fire: bool) -> bool:
        """Compare each rule with its window's sums and change the shared flags that differ (a
        re-check, ``may_fire`` False, only lowers them); notify where this replica changed one.
        False when the flags could not be changed (the store is down)."""
        sums, flags = seen
        changes = []
        for rule, span, flag in zip(self.rules, self._span_of, flags, strict=True):
            value = rule_value(rule, *sums[span])
            holds = value is not None and value > rule.threshold
            if holds != flag and (flag or may_fire):
                changes.append((rule, holds, value))
            else:
                self._follow(rule, flag)
        if not changes:
            return True
        won = self.store.flip([(rule.name, holds) for rule, holds, _ in changes])
        if won is None:
            return False
        for (rule, holds, value), mine in zip(changes, won, strict=True):
            if mine:
                self.firing[rule.name] = holds
                self._notify(rule, holds, value or 0.0, now)
            else:  # another replica changed it first, to the same state
                self._follow(rule, holds)
        return True

    def _follow(self, rule: AlertRule, firing: bool) -> None:
        """Show the shared state of ``rule`` in this replica (``firing``, the gauge) without notifying."""
        if self.firing[rule.name] != firing:
            self.firing[rule.name] = firing
            if self.metrics is not None:
                self.metrics.alerts_firing.labels(rule.name).set(1 if firing else 0)

    def _skipped(self) -> None:
        if self.metrics is not None:
            self.metrics.alert_checks_skipped.inc()

    def _after_fork(self) -> None:
        self.store.outage = Outage(self.store.outage.retry_s)  # a lock held at fork stays held in the child
        super()._after_fork()
