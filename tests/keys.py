"""Redis key prefixes of a test's own, so tests sharing one real Redis never see each other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def own_prefix(redis_url: str, *, cluster: bool = False) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted on exit (on every node of a cluster)."""
    prefix = f"qarmtest-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client: redis.Redis | redis.RedisCluster = (
            redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
        )
        try:
            pipe = client.pipeline(transaction=False)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                pipe.execute_command("DEL", key)  # one per DEL: a cluster DEL's keys share a slot
            pipe.execute()
        finally:
            client.close()
