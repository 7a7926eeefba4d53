"""server.rate_limit: requests per minute per API key (per client address without keys), SQLite or Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.errors import RateLimitExceeded
from keel.server import KeyStore, create_app
from keel.server._ratelimit import RateLimiter, RedisWindows, SQLiteWindows

from .server_fixtures import auth as _auth
from .test_server_api import scripted_app

REDIS_URL = "redis://127.0.0.1:6379/13"  # a database of the tests' own, emptied of keel's keys afterwards




def _limited(**rate_limit: object) -> dict[str, object]:
    return {"server": {"rate_limit": {"per_minute": 3, **rate_limit}}}


def _exhaust(client: TestClient, headers: dict[str, str]) -> list[int]:
    return [client.get("/v1/approvals", headers=headers).status_code for _ in range(4)]


def _check_429(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get("/v1/traces", headers=headers)
    assert r.status_code == 429
    assert r.json() == {"error": "rate_limit_exceeded", "message": "more than 3 requests per minute from this caller",
                        "hint": r.json()["hint"]} and "Retry-After" in r.json()["hint"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    chat = client.post("/v1/chat/completions", headers=headers,
                       json={"model": "keel", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 429 and chat.json()["error"]["code"] == "rate_limit_exceeded"  # OpenAI's shape


def _assert_per_key(client: TestClient, ann: str, bob: str) -> None:
    assert _exhaust(client, _auth(ann)) == [200, 200, 200, 429]
    _check_429(client, _auth(ann))
    assert _exhaust(client, _auth(bob))[:3] == [200, 200, 200]  # another key has its own minute
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and the scrape are not limited
        assert client.get(path, headers=_auth(ann)).status_code == 200, path
    metrics = client.get("/metrics", headers=_auth(ann)).text
    assert 'keel_http_rate_limited_total{caller="key"} 4.0' in metrics  # ann's 4th, 5th, chat; bob's 4th


def test_each_key_gets_its_own_requests_per_minute(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    with TestClient(create_app(scripted_app(**_limited()), keys=keys, workers=False)) as client:
        _assert_per_key(client, ann, bob)


def test_without_keys_the_client_address_is_limited(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(**_limited()), workers=False)) as client:
        assert _exhaust(client, {}) == [200, 200, 200, 429]
        assert 'keel_http_rate_limited_total{caller="ip"} 1.0' in client.get("/metrics").text
    with TestClient(create_app(scripted_app(**_limited()), workers=False), client=("10.0.0.9", 5000)) as other:
        assert other.get("/v1/approvals").status_code == 200  # the same minute, another address


def test_no_limit_by_default(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(), workers=False)) as client:
        assert {client.get("/v1/approvals").status_code for _ in range(20)} == {200}


def test_the_window_is_the_utc_minute_and_processes_share_it(keel_home: Path) -> None:
    now = datetime(2026, 3, 1, 12, 0, 45, tzinfo=UTC)
    shared = keel_home / "ratelimits.sqlite3"
    one = RateLimiter(2, SQLiteWindows(shared), clock=lambda: now)
    two = RateLimiter(2, SQLiteWindows(shared), clock=lambda: now)  # another process on the same machine
    one.hit("key", "k1")
    two.hit("key", "k1")
    with pytest.raises(RateLimitExceeded) as refused:
        one.hit("key", "k1")
    assert refused.value.retry_after == 15.0 and refused.value.http_status == 429
    now = datetime(2026, 3, 1, 12, 1, 0, tzinfo=UTC)  # the next minute starts empty
    one.hit("key", "k1")


def test_an_unreachable_store_lets_requests_through(keel_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(1, RedisWindows("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    limiter.hit("key", "k1")
    limiter.hit("key", "k1")
    assert "rate limit counters unavailable" in caplog.text


@pytest.fixture
def redis_db() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    yield REDIS_URL
    for key in client.scan_iter("keel:ratelimit:*"):
        client.delete(key)
    client.close()


@pytest.mark.scale
def test_redis_counters_are_shared_by_every_replica(workspace: Path, keys: KeyStore, redis_db: str) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    settings = _limited(backend="redis", redis_url=redis_db)
    first = TestClient(create_app(scripted_app(**settings), keys=keys, workers=False))
    second = TestClient(create_app(scripted_app(**settings), keys=keys, workers=False))  # another replica
    with first, second:
        assert [c.get("/v1/approvals", headers=_auth(ann)).status_code for c in (first, second, first, second)] == [
            200, 200, 200, 429]
        _check_429(first, _auth(ann))
        assert second.get("/v1/approvals", headers=_auth(bob)).status_code == 200


@pytest.mark.scale
def test_redis_window_expires_with_its_minute(redis_db: str) -> None:
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    windows = RedisWindows(redis_db, prefix=prefix)
    now = datetime.now(UTC)
    limiter = RateLimiter(1, windows, clock=lambda: now)
    limiter.hit("key", "k1")
    with pytest.raises(RateLimitExceeded):
        limiter.hit("key", "k1")
    client = redis.Redis.from_url(redis_db)
    try:
        [key] = client.keys(prefix + "keel:ratelimit:key:k1:*")
        assert int(client.get(key)) == 2 and 0 < client.ttl(key) <= 60  # type: ignore[arg-type]
    finally:
        for k in client.keys(prefix + "*"):
            client.delete(k)
        client.close()
