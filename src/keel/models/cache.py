"""Exact-match response cache for deterministic (temperature 0) calls.

The key is a hash of model + messages + parameters (``ChatRequest.cache_key``).
``gateway.cache.backend`` chooses where entries live (:func:`build_cache`): SQLite
under the data directory (the embedded default), Redis (shared by every replica
and worker in scale mode) or this process's memory.

A cache only saves calls: when Redis cannot be reached, a lookup is a miss and a
store is skipped (logged once per outage), and the model answers as usual.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._redis import Outage, connect
from .._sqlite import ThreadConnections
from .base import ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    from ..config import CacheSettings

__all__ = ["MemoryCache", "RedisCache", "ResponseCache", "SQLiteCache", "build_cache"]

log = logging.getLogger(__name__)


class ResponseCache(Protocol):
    def get(self, key: str) -> ChatResponse | None: ...

    def put(self, key: str, response: ChatResponse) -> None: ...


def _dump(response: ChatResponse) -> str:
    data = asdict(response)
    return json.dumps(data)


def _load(blob: str) -> ChatResponse:
    data = json.loads(blob)
    data["usage"] = Usage(**data["usage"])
    data["tool_calls"] = [ToolCall(**c) for c in data["tool_calls"]]
    return ChatResponse(**data)


class MemoryCache:
    def __init__(self) -> None:
        self._items: dict[str, str] = {}

    def get(self, key: str) -> ChatResponse | None:
        blob = self._items.get(key)
        return _load(blob) if blob else None

    def put(self, key: str, response: ChatResponse) -> None:
        self._items[key] = _dump(response)


class SQLiteCache:
    def __init__(self, path: Path, ttl_s: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._connections = ThreadConnections(path, autocommit=False)
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT, created REAL)")

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def get(self, key: str) -> ChatResponse | None:
        row = self._conn().execute("SELECT body, created FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None or (self.ttl_s is not None and time.time() - row[1] > self.ttl_s):
            return None
        return _load(row[0])

    def put(self, key: str, response: ChatResponse) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, body, created) VALUES (?, ?, ?)",
                (key, _dump(response), time.time()),
            )


class RedisCache:
    """The same cache on Redis, shared by every replica and worker; entries expire after ``ttl_s``."""

    def __init__(self, url: str, ttl_s: float | None = None, prefix: str = "keel:cache:", *,
                 timeout_s: float = 2.0, retry_s: float = 5.0) -> None:
        self._redis, self._errors = connect(url, setting="gateway.cache.redis_url", timeout_s=timeout_s)
        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        #: while the cache is down it is skipped without trying, but for one try every retry_s
        self.outage = Outage(retry_s)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.outage.skip():
            return None
        try:
            result = fn(*args, **kwargs)
        except self._errors as exc:
            if self.outage.failed():
                log.warning("response cache at %s unavailable, calling models uncached: %s", self.url, exc)
            return None
        if self.outage.recovered():
            log.warning("response cache at %s is back", self.url)
        return result

    def get(self, key: str) -> ChatResponse | None:
        blob = self._call(self._redis.get, self.prefix + key)
        return _load(blob.decode()) if blob else None

    def put(self, key: str, response: ChatResponse) -> None:
        ttl = max(1, int(self.ttl_s)) if self.ttl_s else None
        self._call(self._redis.set, self.prefix + key, _dump(response), ex=ttl)


def build_cache(settings: CacheSettings, data_dir: Path) -> ResponseCache | None:
    """The response cache ``gateway.cache`` describes, or None when it is disabled."""
    if not settings.enabled:
        return None
    if settings.backend == "redis":
        return RedisCache(settings.redis_url, ttl_s=settings.ttl_s, prefix=settings.key_prefix)
    if settings.backend == "memory":
        return MemoryCache()
    return SQLiteCache(data_dir / "cache.sqlite3", ttl_s=settings.ttl_s)
