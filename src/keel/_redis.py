"""One way to open a Redis client from a URL setting: what keel's Redis-backed stores share.

The budget counters, the response cache, the rate limiter and the shared alert windows each
build their client here: the ``scale`` extra missing is :class:`~keel.errors.MissingDependency`,
a URL redis-py refuses is a :class:`~keel.errors.ConfigError` naming the setting it came from.
No connection is made yet (redis-py connects on the first command), so a store that is down
is each caller's to handle, with the :attr:`RedisClient.errors` it catches.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import ConfigError, MissingDependency

__all__ = ["RedisClient", "connect"]


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
