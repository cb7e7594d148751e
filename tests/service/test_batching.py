"""The micro-batcher inside the app: shared batches, back-pressure, deadlines, callers that
leave, a failing batch, a dead batcher. No timed assertions: waits are set so that what is
asserted cannot depend on the machine's speed."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from runtime.engine import Engine
from tests.service.conftest import metric_value, running

pytestmark = pytest.mark.anyio


def one(i: int) -> dict[str, Any]:
    return {"items": [{"id": f"item-{i}", "text": "red cat song"}]}


async def test_concurrent_requests_share_batches(make_settings: Any) -> None:
    # a batch closes only when full (the wait is far longer than any run), so 32 requests
    # make exactly 4 batches of 8
    settings = make_settings(
        max_batch=8, max_wait_ms=60_000, request_timeout_s=120, batch_wait="always"
    )
    async with running(settings) as (_, client):
        answers = await asyncio.gather(*(client.post("/v1/items", json=one(i)) for i in range(32)))
        assert [a.status_code for a in answers] == [200] * 32
        text = (await client.get("/metrics")).text
    assert metric_value(text, "qarm_batch_size_items_count") == 4
    assert metric_value(text, "qarm_batch_size_items_sum") == 32
    assert metric_value(text, "qarm_batch_size_items_bucket", {"le": "8.0"}) == 4
    assert metric_value(text, "qarm_batch_size_items_bucket", {"le": "4.0"}) == 0


async def test_a_lone_request_does_not_wait_for_company(make_settings: Any) -> None:
    # batch_wait=while_decoding (the default): with no other request decoding, the batch goes
    # at once; waiting max_wait (60 s) would pass the 5 s deadline and answer 503
    settings = make_settings(max_batch=8, max_wait_ms=60_000, request_timeout_s=5.0)
    async with running(settings) as (_, client):
        for i in range(3):
            r = await client.post("/v1/items", json=one(i))
            assert r.status_code == 200, r.text
        text = (await client.get("/metrics")).text
    assert metric_value(text, "qarm_batch_size_items_count") == 3


async def test_full_queue_answers_503_with_retry_after(make_settings: Any) -> None:
    async with running(make_settings(max_queue=2, retry_after_s=3)) as (_, client):
        items = {"items": [{"id": f"q{i}", "text": "cat"} for i in range(3)]}
        r = await client.post("/v1/items", json=items)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        assert r.json()["error"]["kind"] == "overloaded"
        assert (await client.get("/v1/items/q0/codes")).status_code == 404
        assert (
            await client.post("/v1/items", json={"items": items["items"][:2]})
        ).status_code == 200
        text = (await client.get("/metrics")).text
    assert metric_value(text, "qarm_errors_total", {"kind": "overloaded"}) == 1


async def test_expired_work_is_dropped_and_counted(make_settings: Any) -> None:
    # alone, an item waits 30 s for a batch of 2; its caller gives up after 1 s. The next
    # request fills the batch: the expired item is dropped before the encoder, counted.
    settings = make_settings(
        max_batch=2, max_wait_ms=30_000, request_timeout_s=1.0, batch_wait="always"
    )
    async with running(settings) as (_, client):
        late = await client.post("/v1/items", json=one(1))
        assert late.status_code == 503
        assert late.json()["error"]["kind"] == "deadline_exceeded"
        assert "retry-after" in late.headers
        r = await client.post("/v1/items", json=one(2))
        assert r.status_code == 200
        text = (await client.get("/metrics")).text
        assert (await client.get("/v1/items/item-1/codes")).status_code == 404
    assert metric_value(text, "qarm_items_dropped_total", {"reason": "deadline"}) == 1
    assert metric_value(text, "qarm_batch_size_items_sum") == 1


async def test_a_caller_that_leaves_does_not_break_the_batch(make_settings: Any) -> None:
    settings = make_settings(
        max_batch=3, max_wait_ms=60_000, request_timeout_s=120, batch_wait="always"
    )
    async with running(settings) as (app, client):
        batcher = app.state.qarm.batcher
        tasks = [asyncio.create_task(client.post("/v1/items", json=one(i))) for i in range(2)]
        while batcher.depth < 2:
            await asyncio.sleep(0.01)
        tasks[1].cancel()  # the caller of item-1 goes away; its item stays queued
        third = await client.post("/v1/items", json=one(2))  # the third item: collate runs
        first = await tasks[0]
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        assert first.status_code == 200
        assert third.status_code == 200
        text = (await client.get("/metrics")).text
        assert (await client.get("/readyz")).status_code == 200
    assert metric_value(text, "qarm_batch_size_items_sum") == 2
    assert metric_value(text, "qarm_items_dropped_total", {"reason": "caller_gone"}) == 1


async def test_a_failing_batch_fails_only_its_items(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Engine.encode
    calls = {"n": 0}

    def flaky(self: Engine, items: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected encoder fault")
        return real(self, items)

    monkeypatch.setattr(Engine, "encode", flaky)
    async with running(make_settings(warmup=False)) as (_, client):
        r = await client.post("/v1/items", json=one(1))
        assert r.status_code == 500
        assert r.json()["error"]["kind"] == "encoder_failed"
        assert (await client.get("/v1/items/item-1/codes")).status_code == 404
        assert (await client.post("/v1/items", json=one(1))).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_a_dead_batcher_fails_requests_and_turns_readyz_and_healthz_red(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("injected bug in the batcher loop")

    async with running(make_settings()) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
        monkeypatch.setattr("service.batcher.collate", broken)
        r = await client.post("/v1/items", json=one(1))
        assert r.status_code == 503
        assert r.json()["error"]["kind"] == "batcher_dead"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "batcher" in ready.json()["detail"]
        alive = await client.get("/healthz")  # only a restart mends it: liveness must say so
        assert alive.status_code == 503
        assert "restart" in alive.json()["detail"]
        again = await client.post("/v1/items", json=one(2))
        assert again.json()["error"]["kind"] == "batcher_dead"
    assert any("batcher died" in rec.getMessage() for rec in caplog.records)


async def test_a_batch_whose_write_breaks_fails_alone_and_the_batcher_lives_on(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that surfaces while writing one batch (not a store outage) answers that batch
    with an error and leaves the batcher serving the next ones."""
    async with running(make_settings()) as (app, client):
        store = app.state.qarm.store
        real_write = store.write
        calls = 0

        async def write_once_broken(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise struct.error("injected: a value that cannot be packed")
            return await real_write(*args, **kwargs)

        monkeypatch.setattr(store, "write", write_once_broken)
        r = await client.post("/v1/items", json=one(1))
        assert r.status_code == 500
        assert r.json()["error"]["kind"] == "write_failed"
        ok = await client.post("/v1/items", json=one(2))
        assert ok.status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
