"""Request bodies: read only after auth, capped before their items are validated, and parsed in
a worker process when large, so that the event loop keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from service.bodies import BodyParser
from service.errors import UnavailableError
from tests.service.conftest import READ, WRITE, auth, running
from tests.service.probe import WhereValidated
from tests.service.test_errors import JSON, the_error
from tests.service.test_hostile import UNPARSABLE

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])  # no store plays a part
TOKENS = [
    {"name": "reader", "token": READ, "scopes": ["read"]},
    {"name": "writer", "token": WRITE, "scopes": ["write", "read"]},
]
BODY_ROUTES = [("/v1/items", WRITE), ("/v1/codes:batchGet", READ), ("/v1/items/x", WRITE)]


async def endless(first: bytes) -> AsyncIterator[bytes]:
    """A streamed body that sends `first`, then nothing, ever: a route that reads it waits."""
    yield first
    await asyncio.Event().wait()


@SQLITE_ONLY
@pytest.mark.parametrize(("path", "token"), BODY_ROUTES)
async def test_auth_comes_before_the_body_is_read(
    make_settings: Any, path: str, token: str
) -> None:
    """Without a valid token: 401, whatever the body; not a 400 or 422 about a body that
    should never have been parsed, and without reading it (one that never ends gets its 401
    too; read first, it would wait for QARM_BODY_TIMEOUT_S and get a 408)."""
    method = "PUT" if path == "/v1/items/x" else "POST"
    async with running(make_settings(tokens=TOKENS, body_timeout_s=60.0)) as (_, client):
        for headers in ({}, auth("wrong-token-0123456789")):
            for body in (b'{"items": [', b"\xff\xfe", json.dumps({"nope": 1}).encode()):
                r = await client.request(method, path, content=body, headers=JSON | headers)
                the_error(r, 401, "unauthorized")
            r = await client.request(
                method, path, content=endless(b'{"ids": ['), headers=JSON | headers
            )
            the_error(r, 401, "unauthorized")
        r = await client.request(method, path, content=b'{"items": [', headers=JSON | auth(token))
        the_error(r, 400, "bad_request")  # with the token, the body is read and refused


@SQLITE_ONLY
async def test_the_item_limit_comes_before_any_item_is_validated(make_settings: Any) -> None:
    """160,001 items, each bad: the answer is about their count, not about the first item."""
    items = [{"id": f"i{i}", "colour": "red"} for i in range(160_001)]
    async with running(make_settings()) as (_, client):
        r = await client.post("/v1/items", json={"items": items})
        error = the_error(r, 422, "invalid_input")
        assert error["message"] == (
            "body.items: 160001 items, more than the limit of 256 per request"
        )
        assert error["item"] == {"index": None, "id": None, "field": "items"}
        r = await client.post("/v1/codes:batchGet", json={"ids": ["bad id"] * 1001})
        error = the_error(r, 422, "invalid_input")
        assert error["message"] == "body.ids: 1001 ids, more than the limit of 1000 per request"


@SQLITE_ONLY
async def test_a_body_parsed_in_the_worker_is_answered_as_one_parsed_inline(
    make_settings: Any,
) -> None:
    """parse_inline_bytes=0: every body goes to the worker process, and every answer is the
    one the same body gets when parsed on the event loop."""
    good = {"items": [{"id": "w1", "text": "red cat"}]}
    requests: list[tuple[str, str, bytes]] = [
        ("POST", "/v1/items", body) for _, body, _ in UNPARSABLE
    ] + [
        ("POST", "/v1/items", json.dumps({"items": [{"id": "w2", "text": 1}]}).encode()),
        (
            "POST",
            "/v1/items",
            json.dumps({"items": [{"id": "w3", "embedding": [1.0] * 3}]}).encode(),
        ),
        ("POST", "/v1/items", json.dumps(good).encode()),
        ("PUT", "/v1/items/w4", json.dumps({"text": "blue bird"}).encode()),
        ("POST", "/v1/codes:batchGet", json.dumps({"ids": ["w1", "abc\n"]}).encode()),
        ("POST", "/v1/codes:batchGet", json.dumps({"ids": ["w1", "w4", "nobody"]}).encode()),
        ("POST", "/admin/reload", json.dumps({"bundle": "/nowhere", "x": 1}).encode()),
    ]
    answers: dict[int, list[tuple[int, Any]]] = {}
    for inline_bytes in (1 << 20, 0):
        async with running(make_settings(parse_inline_bytes=inline_bytes)) as (app, client):
            answers[inline_bytes] = [
                (r.status_code, r.json())
                for method, path, body in requests
                for r in [await client.request(method, path, content=body, headers=JSON)]
            ]
            sent_to_worker = app.state.metrics.registry.get_sample_value("qarm_bodies_parsing")
            assert sent_to_worker == 0  # all back
    assert answers[0] == answers[1 << 20]
    statuses = [status for status, _ in answers[0]]
    assert statuses == [400] * len(UNPARSABLE) + [422, 422, 200, 200, 422, 200, 422]


async def test_a_large_body_is_validated_in_another_process() -> None:
    """Where the work happens: a body up to `inline_bytes` in this process, a larger one in
    the worker (a thread would not free the event loop: json.loads and pydantic hold the GIL;
    a 53 MB body of 160,000 items stalled the loop 1.2 s from a thread)."""
    registry = CollectorRegistry()
    in_flight = Gauge("bodies", "bodies with the worker", registry=registry)
    parser = BodyParser(inline_bytes=100, in_flight=in_flight)
    try:
        small = await parser.parse(WhereValidated, b"{}", {}, "POST /probe")
        assert small.pid == os.getpid()
        body = json.dumps({"padding": "x" * 100}).encode()
        large = await parser.parse(WhereValidated, body, {}, "POST /probe")
        assert large.pid != os.getpid()
        assert large.padding == "x" * 100
        again = await parser.parse(WhereValidated, body, {}, "POST /probe")
        assert again.pid == large.pid  # one worker, kept
        assert registry.get_sample_value("bodies") == 0
    finally:
        await parser.close()


async def test_a_worker_that_dies_is_a_503_and_then_replaced() -> None:
    """Killed (as the kernel would, out of memory on a hostile body): the body it had gets a
    503 `unavailable` saying so, and the next large body a new worker."""
    registry = CollectorRegistry()
    parser = BodyParser(inline_bytes=0, in_flight=Gauge("bodies", "b", registry=registry))
    try:
        first = await parser.parse(WhereValidated, b"{}", {}, "POST /probe")
        os.kill(first.pid, signal.SIGKILL)  # it runs no more code once this returns
        with pytest.raises(UnavailableError) as err:
            await parser.parse(WhereValidated, b"{}", {}, "POST /probe")
        assert err.value.message == (
            "POST /probe: the process that parses request bodies died; try again"
        )
        second = await parser.parse(WhereValidated, b"{}", {}, "POST /probe")
        assert second.pid not in (first.pid, os.getpid())
        assert registry.get_sample_value("bodies") == 0
    finally:
        await parser.close()


@SQLITE_ONLY
async def test_healthz_answers_while_a_large_body_is_parsed(make_settings: Any) -> None:
    """A 30 MB body (200,000 items) is with the worker process for a good while (it starts,
    then parses); /healthz is answered meanwhile, seen from both sides: the body is still
    with the worker before and after /healthz answers. (This shows the loop is not held
    while the body waits; how long a thread would hold it is no test's business: it is the
    test above that says where the work happens.)"""
    items = [{"id": f"item-{i:06d}", "text": "x" * 120} for i in range(200_000)]
    big = json.dumps({"items": items}).encode()
    async with running(make_settings()) as (app, client):
        registry: CollectorRegistry = app.state.metrics.registry

        def with_worker() -> bool:
            return registry.get_sample_value("qarm_bodies_parsing") == 1

        post = asyncio.create_task(client.post("/v1/items", content=big, headers=JSON))
        answered_meanwhile = 0
        while not post.done():
            if with_worker():
                r = await client.get("/healthz")
                assert r.status_code == 200
                answered_meanwhile += with_worker()
            await asyncio.sleep(0.001)
        error = the_error(await post, 422, "invalid_input")
        assert "200000 items, more than the limit of 256" in error["message"]
        assert answered_meanwhile > 0
