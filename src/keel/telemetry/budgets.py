"""Budgets that stop runaway spend: reserve the worst case before a call, settle after.

The gateway calls :meth:`Budgets.reserve` with the most a call could cost (every
input token, every allowed output token). Every budget that applies to the
request (per request, session, user, tenant id, or all traffic, optionally per
UTC-aligned minute/hour/day/week/month) must have room for it; the check and
the reservation are one atomic step, so concurrent calls cannot overspend
together. After the call :meth:`Budgets.settle` releases the reservation and
charges the real cost.

Amounts are integers of 1e-9 USD, so sums are exact in SQL, Redis and Lua.
Backends: SQLite (``BEGIN IMMEDIATE``: one writer at a time, across processes
on one machine) and Redis (one Lua script: atomic across every replica).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from .._redis import Outage, connect
from .._sqlite import ThreadConnections
from ..config import BudgetLimit, Settings
from ..errors import BudgetExceeded, BudgetStoreUnavailable, ConfigError
from ..models.gateway import BudgetHook, NoBudget

__all__ = ["Budgets", "RedisCounters", "Reservation", "SQLiteCounters", "build_budgets", "window"]

log = logging.getLogger("keel.budgets")
NANO = 1_000_000_000
_SCOPE_KEYS = {"request": "request_id", "session": "session_id", "user": "user_id", "tenant": "tenant_id"}


def to_nano(usd: float) -> int:
    return round(usd * NANO)


@dataclass(frozen=True)
class Check:
    """One budget that applies to one call: its counter key, limit and reset time."""

    key: str
    name: str
    limit: int
    resets_at: datetime | None

    def ttl_s(self, now: datetime) -> int:
        """Counters of a window expire a day after it ends; all-time counters never (0)."""
        return int((self.resets_at - now).total_seconds()) + 86400 if self.resets_at else 0


@dataclass(frozen=True)
class Reservation:
    checks: tuple[Check, ...]
    amount: int
    #: names this reservation's lease on each counter
    id: str = ""
    #: Unix time after which an unsettled reservation is released (its caller died)
    expires_at: float = 0.0


def window(per: str | None, now: datetime) -> tuple[str, datetime | None]:
    """(label, end) of the UTC-aligned window holding ``now``; ("total", None) without one."""
    if per is None:
        return "total", None
    if per == "minute":
        start = now.replace(second=0, microsecond=0)
        return start.strftime("%Y%m%dT%H%M"), start + timedelta(minutes=1)
    if per == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y%m%dT%H"), start + timedelta(hours=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if per == "day":
        return day.strftime("%Y%m%d"), day + timedelta(days=1)
    if per == "week":
        start = day - timedelta(days=day.weekday())
        return start.strftime("%GW%V"), start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.strftime("%Y%m"), end


class Counters(Protocol):
    def reserve(self, reservation: Reservation, now: datetime) -> Check | None:
        """Release expired leases, then reserve on every check atomically, or return the first without room."""
        ...

    def settle(self, reservation: Reservation, actual: int) -> None: ...

    def used(self, key: str) -> tuple[int, int]:
        """(spent, reserved) of one counter."""
        ...


class Budgets:
    """The gateway's BudgetHook: every configured limit, over a counter backend."""

    def __init__(
        self,
        limits: list[BudgetLimit],
        counters: Counters,
        *,
        on_reject: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_s: float = 600.0,
    ) -> None:
        self.limits = limits
        self.counters = counters
        self.on_reject = on_reject
        self.clock = clock
        self.lease_s = lease_s

    def checks(self, metadata: Mapping[str, str], now: datetime) -> tuple[Check, ...]:
        """The budgets that apply to a request with this metadata."""
        found = []
        for limit in self.limits:
            ident = "all" if limit.scope == "global" else metadata.get(_SCOPE_KEYS[limit.scope])
            if not ident:
                continue  # no user id, no per-user budget to charge
            label, resets_at = window(limit.per, now)
            name = f"{limit.scope}:{ident}" + (f" per {limit.per}" if limit.per else "")
            found.append(
                Check(
                    f"keel:budget:{limit.scope}:{ident}:{limit.per or 'total'}:{label}",
                    name,
                    to_nano(limit.usd),
                    resets_at,
                )
            )
        return tuple(found)

    def reserve(self, *, model: str, max_cost_usd: float, metadata: dict[str, str]) -> Reservation | None:
        now = self.clock()
        checks = self.checks(metadata, now)
        if not checks:
            return None
        if math.isinf(max_cost_usd):  # the gateway's word for a model with no known price
            raise ConfigError(
                f"model {model!r} has no known price, so the {checks[0].name} budget cannot bound what it spends",
                hint=f"set models.{model}.input_price_per_mtok and output_price_per_mtok in keel.yaml "
                     "(0 for a model you run yourself)",
            )
        reservation = Reservation(checks, to_nano(max_cost_usd), uuid.uuid4().hex, now.timestamp() + self.lease_s)
        refused = self.counters.reserve(reservation, now)
        if refused is not None:
            if self.on_reject:
                self.on_reject(refused.name.split(":", 1)[0])
            resets = refused.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ") if refused.resets_at else None
            raise BudgetExceeded(refused.name, refused.limit / NANO, resets)
        return reservation

    def settle(self, reservation: Any, cost_usd: float) -> None:
        if reservation is not None:
            self.counters.settle(reservation, to_nano(cost_usd))

    def usage(self, metadata: Mapping[str, str]) -> list[dict[str, Any]]:
        """Each budget that applies to ``metadata``: limit, spent, reserved, left, reset time."""
        rows = []
        for check in self.checks(metadata, self.clock()):
            spent, reserved = self.counters.used(check.key)
            rows.append(
                {
                    "budget": check.name,
                    "limit_usd": check.limit / NANO,
                    "spent_usd": spent / NANO,
                    "reserved_usd": reserved / NANO,
                    "left_usd": (check.limit - spent - reserved) / NANO,
                    "resets_at": check.resets_at.isoformat() if check.resets_at else None,
                }
            )
        return rows


class SQLiteCounters:
    """Counters in a SQLite file; BEGIN IMMEDIATE makes check-and-reserve one step.

    Each reservation also leaves a lease row per counter; a lease that outlives its
    expiry (the caller died before settling) is released by the next reservation.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = ThreadConnections(self.path)
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS budget_counters (key TEXT PRIMARY KEY, "
            "spent INTEGER NOT NULL DEFAULT 0, reserved INTEGER NOT NULL DEFAULT 0, expires_at REAL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS budget_leases (id TEXT NOT NULL, key TEXT NOT NULL, "
            "amount INTEGER NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (id, key))"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS ix_budget_leases_expiry ON budget_leases (expires_at)")

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def reserve(self, reservation: Reservation, now: datetime) -> Check | None:
        conn = self._conn()
        ts = now.timestamp()
        conn.execute("BEGIN IMMEDIATE")
        try:
            _release_expired(conn, ts)
            for check in reservation.checks:
                row = conn.execute(
                    "SELECT spent + reserved FROM budget_counters WHERE key = ?", (check.key,)
                ).fetchone()
                if (row[0] if row else 0) + reservation.amount > check.limit:
                    conn.execute("COMMIT")  # keep what _release_expired gave back
                    return check
            for check in reservation.checks:
                expires = ts + check.ttl_s(now) if check.resets_at else None
                conn.execute(
                    "INSERT INTO budget_counters (key, reserved, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET reserved = reserved + excluded.reserved",
                    (check.key, reservation.amount, expires),
                )
                conn.execute(
                    "INSERT INTO budget_leases (id, key, amount, expires_at) VALUES (?, ?, ?, ?)",
                    (reservation.id, check.key, reservation.amount, reservation.expires_at),
                )
            conn.execute("DELETE FROM budget_counters WHERE expires_at < ?", (ts,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return None

    def settle(self, reservation: Reservation, actual: int) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for check in reservation.checks:
                held = conn.execute(
                    "DELETE FROM budget_leases WHERE id = ? AND key = ?", (reservation.id, check.key)
                ).rowcount
                conn.execute(
                    "UPDATE budget_counters SET reserved = reserved - ?, spent = spent + ? WHERE key = ?",
                    (reservation.amount if held else 0, actual, check.key),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def used(self, key: str) -> tuple[int, int]:
        row = self._conn().execute("SELECT spent, reserved FROM budget_counters WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)


def _release_expired(conn: sqlite3.Connection, ts: float) -> None:
    """Give back what calls that never settled still hold."""
    expired = conn.execute(
        "SELECT key, SUM(amount) FROM budget_leases WHERE expires_at < ? GROUP BY key", (ts,)
    ).fetchall()
    if expired:
        conn.executemany(
            "UPDATE budget_counters SET reserved = reserved - ? WHERE key = ?", [(a, k) for k, a in expired]
        )
        conn.execute("DELETE FROM budget_leases WHERE expires_at < ?", (ts,))


_RESERVE_LUA = """
-- KEYS: counter, leases, counter, leases, ...  ARGV: amount, id, now, expires, then limit and ttl per counter
local amount, id, now, expires = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local n = #KEYS / 2
for i = 1, n do
  local key, leases = KEYS[2 * i - 1], KEYS[2 * i]
  local all = redis.call('HGETALL', leases)
  for j = 1, #all, 2 do
    local held, until_ = string.match(all[j + 1], '^(%d+)|(.+)$')
    if tonumber(until_) < now then
      redis.call('HINCRBY', key, 'reserved', 0 - tonumber(held))
      redis.call('HDEL', leases, all[j])
    end
  end
end
for i = 1, n do
  local key = KEYS[2 * i - 1]
  local used = tonumber(redis.call('HGET', key, 'spent') or '0')
             + tonumber(redis.call('HGET', key, 'reserved') or '0')
  if used + amount > tonumber(ARGV[3 + 2 * i]) then return i end
end
for i = 1, n do
  local key, leases = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', key, 'reserved', amount)
  redis.call('HSET', leases, id, amount .. '|' .. expires)
  local ttl = tonumber(ARGV[4 + 2 * i])
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', leases, ttl)
  end
end
return 0
"""

_SETTLE_LUA = """
-- KEYS: counter, leases, ...  ARGV: id, amount, actual
for i = 1, #KEYS, 2 do
  if redis.call('HDEL', KEYS[i + 1], ARGV[1]) == 1 then
    -- 0 - x, not -x: Lua writes -0 for a free call, which HINCRBY refuses as not an integer
    redis.call('HINCRBY', KEYS[i], 'reserved', 0 - tonumber(ARGV[2]))
  end
  redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[3]))
end
return 0
"""


class RedisCounters:
    """Counters in Redis hashes; a Lua script makes check-and-reserve atomic for all replicas.

    An unreachable Redis fails closed: the call is refused (BudgetStoreUnavailable), never made unbudgeted.
    After a failure calls are refused at once for ``retry_s`` seconds (:class:`~keel._redis.Outage`),
    so a hung Redis costs one timeout per ``retry_s``, not one per call.
    """

    def __init__(self, url: str, *, prefix: str = "", timeout_s: float = 5.0, retry_s: float = 5.0) -> None:
        self.client, self._errors = connect(url, setting="budgets.redis_url", timeout_s=timeout_s)
        self.url = url
        self.prefix = prefix
        self.outage = Outage(retry_s)
        self._last_error = ""
        self._reserve = self.client.register_script(_RESERVE_LUA)
        self._settle = self.client.register_script(_SETTLE_LUA)

    def _run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        if self.outage.skip():
            raise self._unreachable(f"{self._last_error} (not retried for {self.outage.retry_s:g}s)")
        try:
            result = fn(**kwargs)
        except self._errors as exc:
            self._last_error = str(exc)
            if self.outage.failed():
                log.error("budget store at %s unavailable, model calls are refused until it is back: %s",
                          self.url, exc)
            raise self._unreachable(str(exc)) from None
        if self.outage.recovered():
            log.warning("budget store at %s is back", self.url)
        return result

    def _unreachable(self, why: str) -> BudgetStoreUnavailable:
        return BudgetStoreUnavailable(
            f"the budget store at {self.url} cannot be reached: {why}",
            hint="start Redis or fix budgets.redis_url; calls are refused until then",
        )

    def _keys(self, checks: tuple[Check, ...]) -> list[str]:
        return [k for c in checks for k in (self.prefix + c.key, self.prefix + c.key + ":leases")]

    def reserve(self, reservation: Reservation, now: datetime) -> Check | None:
        checks = reservation.checks
        args: list[Any] = [reservation.amount, reservation.id, now.timestamp(), repr(reservation.expires_at)]
        for check in checks:
            args += [check.limit, check.ttl_s(now)]
        refused = int(self._run(self._reserve, keys=self._keys(checks), args=args))
        return checks[refused - 1] if refused else None

    def settle(self, reservation: Reservation, actual: int) -> None:
        args = [reservation.id, reservation.amount, actual]
        self._run(self._settle, keys=self._keys(reservation.checks), args=args)

    def used(self, key: str) -> tuple[int, int]:
        spent, reserved = self._run(self.client.hmget, name=self.prefix + key, keys=["spent", "reserved"])
        return int(spent or 0), int(reserved or 0)


def build_budgets(settings: Settings, *, on_reject: Callable[[str], None] | None = None) -> BudgetHook:
    """The configured budgets, or a no-op hook (no counter I/O) when none are set."""
    limits = settings.budgets.all_limits()
    if not limits:
        return NoBudget()
    counters: Counters
    if settings.budgets.backend == "redis":
        counters = RedisCounters(settings.budgets.redis_url)
    elif settings.budgets.backend == "sqlite":
        counters = SQLiteCounters(settings.data_dir / "budgets.sqlite3")
    else:  # pragma: no cover - the settings model forbids it
        raise ConfigError(f"unknown budgets.backend {settings.budgets.backend!r}", hint="use sqlite or redis")
    return Budgets(limits, counters, on_reject=on_reject, lease_s=settings.budgets.lease_s)
