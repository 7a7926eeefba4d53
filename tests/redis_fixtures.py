"""The real Redis on this machine, shared by tests that run at once: a key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of this test's own (``keel-test-<hex>:``); every key under it is deleted afterwards."""
    import redis

    prefix = f"keel-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
