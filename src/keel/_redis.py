"""One way to open a Redis client from a URL setting: what keel's Redis-backed stores share.

The budget counters, the response cache, the rate limiter and the shared alert windows each
build their client here: the ``scale`` extra missing is :class:`~keel.errors.MissingDependency`,
a URL redis-py refuses is a :class:`~keel.errors.ConfigError` naming the setting it came from.
No connection is made yet (redis-py connects on the first command), so a store that is down
is each caller's to handle, with the :attr:`RedisClient.errors` it catches. :class:`Outage`
keeps a store that is down from costing every call a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import ConfigError, MissingDependency

__all__ = ["Outage", "RedisClient", "connect"]


class RedisClient(NamedTuple):
    #: a ``redis.Redis``; thread-safe (one connection pool), reconnects by itself after a fork
    client: Any
    #: ``redis.RedisError``: what a command raises when the server is unreachable, hung or refuses it
    errors: type[Exception]


def connect(url: str, *, setting: str, timeout_s: float, used_by: str | None = None) -> RedisClient:
    """A client for ``url``, whose commands give up after ``timeout_s`` (connecting or waiting for
    a reply). ``setting`` is where the URL came from (``budgets.redis_url``), and ``used_by`` the
    setting that chose Redis when that is another one, both named in the error for a bad URL."""
    try:
        import redis
    except ModuleNotFoundError:
        raise MissingDependency("the Redis client", "scale") from None
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except ValueError as exc:
        where = f"{setting} {url!r}" + (f" (used by {used_by})" if used_by else "")
        raise ConfigError(f"{where} is not a Redis URL: {exc}", hint="use e.g. redis://127.0.0.1:6379/0") from None
    return RedisClient(client, redis.RedisError)


class Outage:
    """What a store that stopped answering costs its callers: one timeout per ``retry_s``, not one per call.

    A Redis that is up but hung makes every command wait out its socket timeout; a request that
    touches the budget counters, the cache and the rate limiter would wait for all three, every
    time. After a failure :meth:`skip` is True for ``retry_s`` seconds (the caller acts as if the
    store had failed, at once); then one call tries the store again. :meth:`failed` and
    :meth:`recovered` return True on the first of each, so the caller logs an outage once.
    """

    __slots__ = ("_down", "_guard", "_retry_at", "clock", "retry_s")

    def __init__(self, retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self.clock = clock
        self._retry_at = 0.0
        self._down = False
        self._guard = threading.Lock()

    def skip(self) -> bool:
        """Whether to skip the store now, without trying it."""
        return bool(self._retry_at) and self.clock() < self._retry_at

    def failed(self) -> bool:
        """Record a failure; True if it starts an outage."""
        with self._guard:
            self._retry_at = self.clock() + self.retry_s
            started, self._down = not self._down, True
            return started

    def recovered(self) -> bool:
        """Record a success; True if it ends an outage."""
        if not self._down:  # the usual case: one attribute read
            return False
        with self._guard:
            ended, self._down, self._retry_at = self._down, False, 0.0
            return ended
