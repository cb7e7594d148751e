"""Image decoding kept in bounds: a request's pixel budget read from the image headers before any
image is decoded, cheap writes that never queue behind busy image decoding, and the write's
deadline kept while a request waits to be decoded (its work then never done)."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from runtime import Engine
from service.errors import DeadlineExceededError
from service.prepare import prepare_request
from service.schemas import ItemIn
from service.state import AppState
from tests.service.conftest import DIM, metric_value, png_b64, running
from tests.service.test_errors import the_error

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])
HANG_GUARD_S = 60  # only against a hang: no answer this late is a failure, whatever the machine


def embedding(seed: int) -> list[float]:
    return [float(v) for v in np.random.default_rng(seed).standard_normal(DIM)]


@cache
def big_png() -> str:
    """The issue's image: a one-colour 5000 x 5000 PNG, ~80 KB, ~0.4 s to decode on one core."""
    pixels = np.full((5000, 5000, 3), 7, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def truncated_png(seed: int) -> str:
    """A 40 x 30 PNG cut in its pixel data: its header reads, its pixels do not decode."""
    raw = base64.b64decode(png_b64(seed))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


@SQLITE_ONLY
async def test_the_pixel_budget_is_checked_from_headers_before_any_image_is_decoded(
    make_settings: Any,
) -> None:
    """Item 0 cannot be decoded, but the budget is summed from the headers first: the refusal
    names item 3, whose 40 x 30 pixels pass the 3000 of the request, and nothing is written."""
    items = [
        {"id": "broken", "image": truncated_png(0)},  # 1200 pixels by its header
        {"id": "words", "text": "red cat"},
        {"id": "small", "image": png_b64(1)},  # 2400
        {"id": "over", "image": png_b64(2)},  # 3600 > 3000
    ]
    async with running(make_settings(max_request_pixels=3000)) as (_, client):
        error = the_error(
            await client.post("/v1/items", json={"items": items}), 422, "invalid_input"
        )
        assert error["item"] == {"index": 3, "id": "over", "field": "image"}
        message = error["message"]
        assert message.startswith("items[3] (over): image: 40x30 pixels"), message
        assert "3600 pixels, more than the limit of 3000" in message
        assert "QARM_MAX_REQUEST_PIXELS" in message
        for item_id in ("words", "small"):
            assert (await client.get(f"/v1/items/{item_id}/codes")).status_code == 404
        # within the budget the same images go through (2400 <= 3000)
        r = await client.post("/v1/items", json={"items": items[1:3]})
        assert r.status_code == 200, r.text


@SQLITE_ONLY
async def test_the_issues_sixteen_5000_pixel_squares_are_refused_by_default(
    make_settings: Any,
) -> None:
    """16 x 25 Mpx in one request (each at the per-image limit) pass the default budget of
    100 Mpx at the fifth image: 422 naming it, before any of them is decoded."""
    items = [{"id": f"big-{i}", "image": big_png()} for i in range(16)]
    async with running(make_settings()) as (_, client):
        error = the_error(
            await client.post("/v1/items", json={"items": items}), 422, "invalid_input"
        )
        assert error["item"] == {"index": 4, "id": "big-4", "field": "image"}
        assert "125000000 pixels, more than the limit of 100000000" in error["message"]


@asynccontextmanager
async def busy_image_pool(state: AppState) -> AsyncIterator[None]:
    """Every thread that decodes images held by a job of ours until the block ends: the pool
    as two requests of large images leave it, without depending on how long they take."""
    threads = state.settings.decode_threads
    started, gate = threading.Semaphore(0), threading.Event()

    def hold() -> None:
        started.release()
        gate.wait()

    held = [state.decoders.media.submit(hold) for _ in range(threads)]
    try:
        for _ in range(threads):
            assert await asyncio.to_thread(started.acquire, timeout=HANG_GUARD_S)
        yield
    finally:
        gate.set()
        for job in held:
            await asyncio.wrap_future(job)


async def test_cheap_writes_do_not_queue_behind_image_decoding(make_settings: Any) -> None:
    async with running(make_settings()) as (app, client):
        async with busy_image_pool(app.state.qarm):
            for body in (
                {"items": [{"id": "vector", "embedding": embedding(1)}]},
                {"items": [{"id": "words", "text": "red cat"}]},
            ):
                r = await asyncio.wait_for(client.post("/v1/items", json=body), HANG_GUARD_S)
                assert r.status_code == 200, r.text
        assert (await client.get("/v1/items/vector/codes")).status_code == 200
        text = (await client.get("/metrics")).text
    assert metric_value(text, "qarm_stage_duration_seconds_count", {"stage": "decode"}) == 2


async def test_a_write_whose_deadline_passes_while_waiting_to_decode_is_503_and_not_done(
    make_settings: Any,
) -> None:
    async with running(make_settings(request_timeout_s=0.5, retry_after_s=2)) as (app, client):
        state: AppState = app.state.qarm
        async with busy_image_pool(state):
            body = {"items": [{"id": "cover", "image": png_b64(3)}, {"id": "t", "text": "cat"}]}
            r = await asyncio.wait_for(client.post("/v1/items", json=body), HANG_GUARD_S)
            error = the_error(r, 503, "deadline_exceeded")
            assert "QARM_REQUEST_TIMEOUT_S" in error["message"]
            assert "decoded" in error["message"]
            assert r.headers["retry-after"] == "2"
        # the pool is free again; the request's decoding, queued behind our jobs, never ran
        await asyncio.wrap_future(state.decoders.media.submit(lambda: None))
        text = (await client.get("/metrics")).text
        assert metric_value(text, "qarm_items_dropped_total", {"reason": "deadline"}) == 2
        assert metric_value(text, "qarm_stage_duration_seconds_count", {"stage": "decode"}) == 0
        assert metric_value(text, "qarm_batch_size_items_count") == 0
        for item_id in ("cover", "t"):
            assert (await client.get(f"/v1/items/{item_id}/codes")).status_code == 404


def test_decoding_stops_once_the_deadline_has_passed(bundles: dict[str, Path]) -> None:
    """In the pool: a deadline already passed refuses before the first item is decoded (an
    image that would not decode is not even looked at); a far one decodes everything."""
    engine = Engine.load(bundles["a"])
    items = [ItemIn(id="broken", image=truncated_png(4)), ItemIn(id="t", text="cat")]
    with pytest.raises(DeadlineExceededError, match="QARM_REQUEST_TIMEOUT_S"):
        prepare_request([engine], items, max_pixels=10**9, deadline=0.0)
    (prepared,) = prepare_request([engine], items[1:], max_pixels=10**9, deadline=math.inf)
    assert [p.item_id for p in prepared] == ["t"]
