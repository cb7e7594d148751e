"""Redis key prefixes of a test's own, so tests sharing one real Redis never see each other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def own_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted on exit."""
    prefix = f"qarmtest-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
