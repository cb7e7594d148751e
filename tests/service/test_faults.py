"""Redis stopped and restarted under the service (a redis-server of the test's own, on a
spare port): 503 with Retry-After while it is down, recovery without a restart."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.redis_server import RedisServer
from tests.service.conftest import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def spare_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test says how to install it)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_redis_down_then_back(
    spare_redis: RedisServer, make_settings: Any, store_kind: str
) -> None:
    assert store_kind == "redis"
    settings = make_settings(redis_url=spare_redis.url, retry_after_s=2, redis_timeout_s=0.5)
    async with running(settings) as (_, client):
        item = {"items": [{"id": "kept", "text": "red cat"}]}
        before = await client.post("/v1/items", json=item)
        assert before.status_code == 200

        spare_redis.stop()
        r = await client.post("/v1/items", json={"items": [{"id": "lost", "text": "dog"}]})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["kind"] == "store_unavailable"
        read = await client.get("/v1/items/kept/codes")
        assert read.status_code == 503
        assert "retry-after" in read.headers
        many = await client.post("/v1/codes:batchGet", json={"ids": ["kept"]})
        assert many.status_code == 503
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200

        spare_redis.start()  # same port, same data directory; the service is not restarted
        assert (await client.get("/readyz")).status_code == 200
        got = await client.get("/v1/items/kept/codes")
        assert got.status_code == 200
        assert got.json() == before.json()["items"][0]
        assert (await client.get("/v1/items/lost/codes")).status_code == 404
        r = await client.post("/v1/items", json={"items": [{"id": "lost", "text": "dog"}]})
        assert r.status_code == 200
        text = (await client.get("/metrics")).text
    assert 'qarm_store_errors_total{op="write",store="redis"} 1.0' in text


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_redis_killed_mid_write(spare_redis: RedisServer, make_settings: Any) -> None:
    """A write sent to a Redis that stops answering, then is killed with -9 and restarted:
    503 `store_unavailable` with Retry-After, the write not acknowledged and not stored, every
    acknowledged one kept (appendfsync always); the service recovers without a restart."""
    settings = make_settings(redis_url=spare_redis.url, retry_after_s=2, redis_timeout_s=0.5)
    async with running(settings) as (_, client):
        kept = await client.post("/v1/items", json={"items": [{"id": "kept", "text": "red cat"}]})
        assert kept.status_code == 200

        spare_redis.freeze()  # the next write is sent and never answered
        cut = {"items": [{"id": "cut", "text": "dog"}]}
        r = await client.post("/v1/items", json=cut)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["kind"] == "store_unavailable"
        assert r.headers["retry-after"] == "2"
        spare_redis.kill()
        spare_redis.start()  # same port, same append-only file

        for _ in range(600):  # waits for the pool to reconnect; asserts nothing about speed
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        got = await client.get("/v1/items/kept/codes")
        assert got.json() == kept.json()["items"][0]
        assert (await client.get("/v1/items/cut/codes")).status_code == 404
        again = await client.post("/v1/items", json=cut)
        assert again.status_code == 200, again.text
