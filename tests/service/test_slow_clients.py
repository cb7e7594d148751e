"""Slow and partial clients (slowloris): a request's headers and body must arrive in time, else
the connection is closed (408 with the error body, for a body a route reads) and counted.

Deadlines are short here (1 s), and nothing is asserted about how long anything took: each
case waits for the outcome (an answer, the connection closed) with a generous guard against
hanging forever, which is what these clients got before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import metric_value, running, service_process, wait_ready
from tests.service.test_errors import JSON, errors_counted, the_error

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])  # no store plays a part
HANG_GUARD_S = 60.0  # a case that gets no outcome within this failed (it would wait forever)
ITEM = json.dumps({"items": [{"id": "slow-1", "text": "cat"}]}).encode()


async def stalled(first: bytes) -> AsyncIterator[bytes]:
    """A streamed body that sends `first` and then nothing, ever."""
    yield first
    await asyncio.Event().wait()


@SQLITE_ONLY
async def test_a_body_that_stops_coming_is_408_request_timeout(make_settings: Any) -> None:
    async with running(make_settings(body_timeout_s=0.2)) as (app, client):
        post = client.post("/v1/items", content=stalled(ITEM[:10]), headers=JSON)
        r = await asyncio.wait_for(post, HANG_GUARD_S)
        error = the_error(r, 408, "request_timeout")
        assert error["message"] == (
            "POST /v1/items: the body did not arrive within 0.2 s (QARM_BODY_TIMEOUT_S)"
        )
        assert error["item"] is None
        assert r.headers["connection"] == "close"  # the rest of the body may still come
        assert await errors_counted(client, "request_timeout") == 1
        text = (await client.get("/metrics")).text
        assert metric_value(text, "qarm_read_timeouts_total", {"phase": "body"}) == 1
        # a body that arrives is not held to the deadline afterwards, nor is any other request
        r = await client.post("/v1/items", content=ITEM, headers=JSON)
        assert r.status_code == 200, r.text
        registry = app.state.metrics.registry
        assert registry.get_sample_value("qarm_read_timeouts_total", {"phase": "body"}) == 1


async def exchange(port: int, sent: bytes) -> bytes:
    """Connect, send `sent` (possibly an unfinished request), then read until the server
    closes the connection: everything it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), HANG_GUARD_S)
    finally:
        writer.close()


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def test_a_real_server_closes_on_slow_headers_and_bodies(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    """`python -m service` over raw sockets: a silent connection and unfinished headers are
    closed without an answer; a short body gets 408 and the close; a body the route never
    reads is closed after its answer; whole requests on a kept-alive connection are served."""
    env = {
        "QARM_SQLITE_PATH": str(tmp_path / "store.sqlite3"),
        "QARM_HEADER_TIMEOUT_S": "1",
        "QARM_BODY_TIMEOUT_S": "1",
    }
    with service_process(env, bundles["a"]) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD_S) as client:
            await wait_ready(client, proc)
            post = b"POST /v1/items HTTP/1.1\r\nHost: qarm\r\nContent-Type: application/json\r\n"
            healthz = b"GET /healthz HTTP/1.1\r\nHost: qarm\r\n\r\n"
            silent, partial, short_body, unread_body, kept_alive = await asyncio.gather(
                exchange(port, b""),
                exchange(port, post),
                exchange(port, post + b"Content-Length: %d\r\n\r\n" % len(ITEM) + ITEM[:10]),
                exchange(port, healthz.replace(b"\r\n\r\n", b"\r\nContent-Length: 100\r\n\r\n")),
                kept_alive_twice(port, healthz),
            )
            assert silent == b""
            assert partial == b""
            status, headers, body = parse_answer(short_body)
            assert status == 408
            assert headers["connection"] == "close"
            assert json.loads(body)["error"]["kind"] == "request_timeout"
            status, _, _ = parse_answer(unread_body)
            assert status == 200  # answered, then closed when the rest never came
            assert kept_alive == [200, 200]

            text = (await client.get("/metrics")).text
            assert metric_value(text, "qarm_read_timeouts_total", {"phase": "headers"}) == 2
            assert metric_value(text, "qarm_read_timeouts_total", {"phase": "body"}) == 2
            assert metric_value(text, "qarm_errors_total", {"kind": "request_timeout"}) == 1
            r = await client.post("/v1/items", content=ITEM, headers=JSON)
            assert r.status_code == 200, r.text


async def kept_alive_twice(port: int, request: bytes) -> list[int]:
    """Two whole requests, one after the other, on one connection: the statuses answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD_S)
            status, headers, _ = parse_answer(head)
            await reader.readexactly(int(headers["content-length"]))
            statuses.append(status)
    finally:
        writer.close()
    return statuses
