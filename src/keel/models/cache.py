"""Exact-match response cache for deterministic (temperature 0) calls.

The key is a hash of model + messages + parameters (``ChatRequest.cache_key``).
The embedded default keeps entries in SQLite under the data directory; scale
mode points the same interface at Redis.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from .base import ChatResponse, ToolCall, Usage

__all__ = ["MemoryCache", "RedisCache", "ResponseCache", "SQLiteCache"]


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
        self._local = threading.local()
        self._path = path
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT, created REAL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30)
            self._local.conn = conn
        return conn

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
    """The same cache on Redis, shared by every replica and worker."""

    def __init__(self, url: str, ttl_s: float | None = None, prefix: str = "keel:cache:") -> None:
        import redis  # scale extra

        self._redis = redis.Redis.from_url(url)
        self.ttl_s = ttl_s
        self.prefix = prefix

    def get(self, key: str) -> ChatResponse | None:
        blob = self._redis.get(self.prefix + key)
        return _load(blob.decode()) if blob else None

    def put(self, key: str, response: ChatResponse) -> None:
        ttl = int(self.ttl_s) if self.ttl_s else None
        self._redis.set(self.prefix + key, _dump(response), ex=ttl)
