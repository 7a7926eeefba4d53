"""A Redis that stops answering costs keel one timeout per retry interval, not one per call.

Each Redis-backed store (budget counters, response cache, rate limiter; the shared alert
windows in tests/test_alerts_shared.py) does what it does when Redis is down, at once, for
``retry_s`` after a failure: budgets refuse (fail closed), the cache is skipped and the rate
limiter lets requests through (fail open). Tested against a port that accepts connections and
never answers, the slowest way for Redis to fail.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime

import pytest

from keel._redis import Outage
from keel.errors import RunError
from keel.models.base import ChatResponse
from keel.models.cache import RedisCache
from keel.server._ratelimit import RateLimiter, RedisWindows
from keel.telemetry.budgets import RedisCounters, Reservation

TIMEOUT_S = 0.3


def timed(fn):  # type: ignore[no-untyped-def]
    """Seconds each of five calls of ``fn`` took (its exceptions are part of the call)."""
    took = []
    for _ in range(5):
        started = time.perf_counter()
        with contextlib.suppress(RunError):  # budgets refuse by raising: part of the call
            fn()
        took.append(time.perf_counter() - started)
    return took


def test_an_outage_is_skipped_for_its_retry_interval_and_reported_once_each_way():
    now = [100.0]
    outage = Outage(retry_s=5, clock=lambda: now[0])
    assert not outage.skip() and not outage.recovered()
    assert outage.failed() and outage.skip()  # the first failure starts the outage
    assert not outage.failed()  # a second one does not start another
    now[0] += 5.1
    assert not outage.skip()  # time for one more try
    assert outage.recovered() and not outage.recovered() and not outage.skip()


def test_budgets_refuse_at_once_while_their_store_hangs(hung_redis, caplog):
    counters = RedisCounters(hung_redis, timeout_s=TIMEOUT_S, retry_s=60)
    reservation = Reservation(id="r1", amount=1, checks=(), expires_at=0.0)
    errors = []

    def reserve():  # type: ignore[no-untyped-def]
        try:
            counters.reserve(reservation, datetime.now(UTC))
        except RunError as exc:
            errors.append(str(exc))
            raise

    took = timed(reserve)
    assert TIMEOUT_S <= took[0] < 5 and max(took[1:]) < 0.05  # one timeout, then refusals at once
    assert len(errors) == 5 and all("cannot be reached" in e for e in errors)  # never an unbudgeted call
    assert "not retried for 60s" in errors[-1]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    counters.client.close()


def test_the_cache_is_skipped_at_once_while_its_store_hangs(hung_redis):
    cache = RedisCache(hung_redis, timeout_s=TIMEOUT_S, retry_s=60)
    took = timed(lambda: cache.get("k"))
    assert TIMEOUT_S <= took[0] < 5 and max(took[1:]) < 0.05
    assert cache.get("k") is None
    cache.put("k", ChatResponse(text="hi", model="m"))  # a write is skipped too, without waiting
    assert max(timed(lambda: cache.put("k", ChatResponse(text="hi", model="m")))) < 0.05
    cache._redis.close()


def test_requests_go_through_at_once_while_the_rate_limit_store_hangs(hung_redis):
    windows = RedisWindows(hung_redis, timeout_s=TIMEOUT_S, retry_s=60)
    limiter = RateLimiter(1, windows)  # one request a minute: every request here would be over it
    took = timed(lambda: limiter.hit("key", "k1"))
    assert TIMEOUT_S <= took[0] < 5 and max(took[1:]) < 0.05  # let through, not limited, not waiting
    windows.client.close()


@pytest.mark.scale
def test_a_store_that_comes_back_is_used_again_after_the_interval():
    import redis

    cache = RedisCache("redis://127.0.0.1:6379/0", prefix=f"keel:test:{time.time_ns()}:", retry_s=0.2)
    cache.outage.failed()  # as if the last call had failed
    assert cache.outage.skip() and cache.get("k") is None
    time.sleep(0.3)
    try:
        cache.put("k", ChatResponse(text="hi", model="m"))
    except redis.RedisError:  # pragma: no cover - the local Redis is part of the test set-up
        pytest.fail("the local Redis is not running")
    assert cache.get("k").text == "hi" and not cache.outage.skip()  # type: ignore[union-attr]
    cache._redis.delete(cache.prefix + "k")
