"""The store unreachable at start-up: the process stays up (/healthz 200), is not ready and
answers 503 with Retry-After until the store answers, then becomes ready by itself."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from loadtest.redis_server import RedisServer
from tests.service.conftest import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Any:
    """A redis-server on a port of its own, not started yet."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test says how to install it)")
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_start_while_the_store_is_down(
    stopped_redis: RedisServer, make_settings: Any
) -> None:
    settings = make_settings(redis_url=stopped_redis.url, retry_after_s=2, redis_timeout_s=0.5)
    async with running(settings) as (_, client):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert "the store is unreachable" in ready.json()["detail"]
        assert "retry-after" in ready.headers
        item = {"items": [{"id": "x", "text": "red cat"}]}
        r = await client.post("/v1/items", json=item)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "2"
        # store_unavailable once service/deps.get_state says so while the store is awaited
        assert r.json()["error"]["kind"] == "store_unavailable"

        stopped_redis.start()
        deadline = time.monotonic() + 10.0  # the backoff tops out at 5 s
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "not ready after the store came up"
            await asyncio.sleep(0.1)
        assert (await client.get("/healthz")).status_code == 200
        r = await client.post("/v1/items", json=item)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_shutdown_while_waiting_for_the_store(
    stopped_redis: RedisServer, make_settings: Any
) -> None:
    settings = make_settings(redis_url=stopped_redis.url, redis_timeout_s=0.5)
    async with running(settings) as (app, client):
        assert (await client.get("/readyz")).status_code == 503
        await asyncio.sleep(0.6)  # a retry has happened
        assert app.state.qarm is None
    tasks = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert "qarm-wait" not in tasks
    assert "qarm-follower" not in tasks
