"""Service processes follow the store's version lifecycle: a staged version is written with
every upload, an activation moves every process with no failed request, rollback loses
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from codebooks import load_bundle
from runtime import Engine, RawItem
from store import CatalogSeed, RedisStore, SqliteStore, Store
from tests.service.conftest import running, service_process, wait_ready

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def open_store(settings: Any) -> Store:
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        return RedisStore(url, prefix=settings.redis_prefix, pool_size=4, timeout_s=2.0)
    return SqliteStore(settings.sqlite_path)


async def test_one_process_follows_stage_activate_and_retire(
    make_settings: Any, bundles: dict[str, Path]
) -> None:
    b = Engine.load(bundles["b"])
    settings = make_settings(follow_poll_s=0.1)
    store = open_store(settings)
    try:
        async with running(settings) as (app, client):
            state = app.state.qarm
            a_version = state.engine.version
            await store.stage(b.version, str(bundles["b"]), CatalogSeed.of(b.bundle))

            async def writes_b() -> bool:
                return b.version in state.written

            await until(writes_b, "the staged version to be loaded")
            r = await client.post("/v1/items", json={"items": [{"id": "s1", "text": "red cat"}]})
            assert r.status_code == 200, r.text
            assert r.json()["bundle_version"] == a_version
            (under_b,) = await store.get_many(b.version, ["s1"])
            assert under_b is not None  # written to the staged version too
            expect = b.encode([b.prepare(RawItem(id="s1", text="red cat"))])
            assert under_b.vq == tuple(expect.vq[0].tolist())
            assert under_b.rq == tuple(expect.rq[0].tolist())

            await store.promote(b.version, str(bundles["b"]))

            async def switched() -> bool:
                return bool(state.engine.version == b.version)

            await until(switched, "the switch to the activated version")
            r = await client.post("/v1/items", json={"items": [{"id": "s2", "text": "blue"}]})
            assert r.json()["bundle_version"] == b.version
            # the previous version is kept current for a rollback
            assert all(await store.get_many(a_version, ["s1", "s2"]))
            got = await client.get("/v1/items/s1/codes")
            assert got.json()["bundle_version"] == b.version

            await store.retire(a_version, batch=100, max_keys_per_s=1e6)

            async def dropped() -> bool:
                return a_version not in state.written

            await until(dropped, "the retired version to be dropped")
            r = await client.post("/v1/items", json={"items": [{"id": "s3", "text": "green"}]})
            assert r.status_code == 200
            assert await store.get_many(a_version, ["s1", "s3"]) == [None, None]
    finally:
        await store.close()


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_two_processes_follow_one_activation_under_load(
    bundles: dict[str, Path], redis_url: str, redis_prefix: str, store_kind: str
) -> None:
    assert store_kind == "redis"
    a = load_bundle(bundles["a"])
    b = Engine.load(bundles["b"])
    env = {
        "QARM_REDIS_URL": redis_url,
        "QARM_REDIS_PREFIX": redis_prefix,
        "QARM_FOLLOW_POLL_S": "5",  # longer than the test waits: pub/sub must wake them
        "QARM_LOG_LEVEL": "WARNING",
    }
    store = RedisStore(redis_url, prefix=redis_prefix, pool_size=4, timeout_s=2.0)
    statuses: list[int] = []
    acked: list[str] = []
    stop = asyncio.Event()

    async def writer(client: httpx.AsyncClient, name: str) -> None:
        i = 0
        while not stop.is_set():
            item_id = f"{name}-{i}"
            r = await client.post("/v1/items", json={"items": [{"id": item_id, "text": "cat"}]})
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked.append(item_id)
            i += 1

    async def versions(clients: list[httpx.AsyncClient]) -> set[str]:
        answers = [await c.post("/v1/codes:batchGet", json={"ids": ["x"]}) for c in clients]
        return {r.json()["bundle_version"] for r in answers}

    try:
        with (
            service_process({**env, "QARM_POD_NAME": "p1"}, bundles["a"]) as (p1, url1),
            service_process({**env, "QARM_POD_NAME": "p2"}, bundles["a"]) as (p2, url2),
        ):
            async with (
                httpx.AsyncClient(base_url=url1, timeout=60) as c1,
                httpx.AsyncClient(base_url=url2, timeout=60) as c2,
            ):
                await wait_ready(c1, p1)
                await wait_ready(c2, p2)
                assert await versions([c1, c2]) == {a.version}
                await store.stage(b.version, str(bundles["b"]), CatalogSeed.of(b.bundle))

                async def both_write_b() -> bool:
                    pods = await store.pods()
                    return len(pods) == 2 and all(b.version in p.written for p in pods)

                await until(both_write_b, "both processes to load the staged version")
                writers = [asyncio.create_task(writer(c, n)) for n, c in [("w1", c1), ("w2", c2)]]
                while len(acked) < 10:
                    await asyncio.sleep(0.01)
                await store.promote(b.version, str(bundles["b"]))

                async def both_on_b() -> bool:
                    return await versions([c1, c2]) == {b.version}

                await until(both_on_b, "both processes to answer with the new version", 10)
                n = len(acked)
                while len(acked) < n + 10:
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.gather(*writers)
                assert set(statuses) == {200}
                # every acknowledged write is under the new version, and under the old one
                assert None not in await store.get_many(b.version, acked)
                assert None not in await store.get_many(a.version, acked)

                await store.promote(a.version, str(bundles["a"]))  # rollback

                async def both_on_a() -> bool:
                    return await versions([c1, c2]) == {a.version}

                await until(both_on_a, "both processes to roll back", 10)
                r = await c2.post("/v1/codes:batchGet", json={"ids": acked[:1000]})
                assert None not in r.json()["items"]
    finally:
        await store.close()
