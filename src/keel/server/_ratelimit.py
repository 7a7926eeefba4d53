"""Requests per minute per caller: an API key, or a client address when no key is sent.

``server.rate_limit.per_minute`` requests are allowed in each UTC-aligned
minute (the same windows as keel's budgets); the next one is refused with
``RateLimitExceeded`` (429, ``Retry-After`` until the minute ends). A fixed
window is one counter per caller and minute, so a caller can send up to twice
the limit across a minute boundary; it never sends more than the limit within
one window.

Counters live in SQLite under the data dir (``BEGIN IMMEDIATE``: every process
on one machine shares them) or in Redis (``INCR`` + ``EXPIRE`` in one
transaction: every replica shares them). A counter store that cannot be
reached lets requests through and logs a warning: the limit protects capacity,
and the gateway's budgets, which fail closed, still protect spend.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .._redis import Outage, connect
from .._sqlite import ThreadConnections
from ..config import RateLimitSettings, Settings
from ..errors import RateLimitExceeded
from ..telemetry.budgets import window

__all__ = ["RateLimiter", "RedisWindows", "SQLiteWindows", "build_rate_limiter"]

log = logging.getLogger("keel.server")


class Windows(Protocol):
    def hit(self, key: str, now: float, expires_at: float) -> int:
        """Count one request on ``key`` at Unix time ``now`` (kept until ``expires_at``); its count so far."""
        ...


class SQLiteWindows:
    """One row per caller and minute in a SQLite file; expired rows are deleted as new ones arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = ThreadConnections(self.path, timeout=5)
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS rate_windows (key TEXT PRIMARY KEY, hits INTEGER NOT NULL, "
            "expires_at REAL NOT NULL)"
        )

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def hit(self, key: str, now: float, expires_at: float) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM rate_windows WHERE expires_at <= ?", (now,))
            row = conn.execute(
                "INSERT INTO rate_windows (key, hits, expires_at) VALUES (?, 1, ?) "
                "ON CONFLICT(key) DO UPDATE SET hits = hits + 1 RETURNING hits",
                (key, expires_at),
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(row[0])


class RedisWindows:
    """One Redis counter per caller and minute, expiring after its window."""

    def __init__(self, url: str, *, prefix: str = "", timeout_s: float = 1.0, retry_s: float = 5.0) -> None:
        self.client, self._errors = connect(url, setting="server.rate_limit.redis_url", timeout_s=timeout_s)
        self.url = url
        self.prefix = prefix
        #: after a failure the store is not tried for retry_s: requests go through without waiting on it
        self.outage = Outage(retry_s)

    def hit(self, key: str, now: float, expires_at: float) -> int:
        if self.outage.skip():
            raise ConnectionError(f"the rate limit store at {self.url} is down (tried again every "
                                  f"{self.outage.retry_s:g}s)")
        ttl = max(1, math.ceil(expires_at - now))
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(self.prefix + key)
        pipe.expire(self.prefix + key, ttl)
        try:
            count, _ = pipe.execute()
        except self._errors:
            self.outage.failed()
            raise
        self.outage.recovered()
        return int(count)


class RateLimiter:
    """``per_minute`` requests per caller per UTC minute over a counter store."""

    def __init__(
        self,
        per_minute: int,
        windows: Windows,
        *,
        on_reject: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.per_minute = per_minute
        self.windows = windows
        self.on_reject = on_reject
        self.clock = clock
        self._warned_at = 0.0

    def hit(self, kind: str, ident: str) -> None:
        """Count one request by caller ``kind`` (``key`` or ``ip``) ``ident``; RateLimitExceeded over the limit."""
        now = self.clock()
        label, resets_at = window("minute", now)
        assert resets_at is not None
        try:
            count = self.windows.hit(f"keel:ratelimit:{kind}:{ident}:{label}", now.timestamp(),
                                     resets_at.timestamp())
        except Exception as exc:  # the store is down: let the request through, say so (once a minute)
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limit counters unavailable, requests are not limited: %s", exc)
            return
        if count > self.per_minute:
            if self.on_reject is not None:
                self.on_reject(kind)
            raise RateLimitExceeded(self.per_minute, (resets_at - now).total_seconds())


def build_rate_limiter(settings: Settings, *, on_reject: Callable[[str], None] | None = None) -> RateLimiter | None:
    """The configured limiter, or None when ``server.rate_limit.per_minute`` is 0."""
    config: RateLimitSettings = settings.server.rate_limit
    if config.per_minute <= 0:
        return None
    windows: Any
    if config.backend == "redis":
        windows = RedisWindows(config.redis_url)
    else:
        windows = SQLiteWindows(settings.data_dir / "ratelimits.sqlite3")
    return RateLimiter(config.per_minute, windows, on_reject=on_reject)
