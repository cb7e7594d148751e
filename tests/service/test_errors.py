"""Every non-2xx answer is the documented error body, counted by kind: also the answers that
FastAPI and Starlette give on their own (body over the limit, unknown route, wrong method, a
bug)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.errors import error_kinds
from store import StoredCodes
from tests.service.conftest import metric_value, running

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])  # no store plays a part

LIMIT = 2000
JSON = {"Content-Type": "application/json"}


def the_error(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The answer's error, once it is checked to be the documented body: JSON, exactly
    `{"error": {"kind", "message", "item"}}`, with this status and kind."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert set(error) == {"kind", "message", "item"}
    assert error["kind"] == kind
    assert isinstance(error["message"], str)
    return error


async def errors_counted(client: httpx.AsyncClient, kind: str) -> float:
    text = (await client.get("/metrics")).text
    return metric_value(text, "qarm_errors_total", {"kind": kind})


def item_body(size: int) -> bytes:
    """A valid one-item POST /v1/items body of exactly `size` bytes (padded with spaces)."""
    body = json.dumps({"items": [{"id": "sized", "text": "cat"}]}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


@SQLITE_ONLY
async def test_body_over_the_limit_is_413_too_large(make_settings: Any) -> None:
    async with running(make_settings(max_body_bytes=LIMIT)) as (_, client):
        declared = await client.post("/v1/items", content=item_body(LIMIT + 1))
        error = the_error(declared, 413, "too_large")
        assert str(LIMIT) in error["message"]
        assert "QARM_MAX_BODY_BYTES" in error["message"]
        assert error["item"] is None

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off as it streams
            for _ in range(30):
                yield b"x" * 100

        streamed = await client.post("/v1/items", content=chunks())
        assert "content-length" not in streamed.request.headers
        error = the_error(streamed, 413, "too_large")
        assert str(LIMIT) in error["message"]
        assert declared.headers["x-request-id"]  # the request middleware saw both
        assert streamed.headers["x-request-id"]
        assert await errors_counted(client, "too_large") == 2
        assert (await client.get("/v1/items/sized/codes")).status_code == 404


@SQLITE_ONLY
async def test_body_at_the_limit_is_taken(make_settings: Any) -> None:
    """The limit is the largest body accepted, declared or streamed."""
    async with running(make_settings(max_body_bytes=LIMIT)) as (_, client):
        r = await client.post("/v1/items", content=item_body(LIMIT), headers=JSON)
        assert r.status_code == 200, r.text
        body = item_body(LIMIT)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        r = await client.post("/v1/items", content=chunks(), headers=JSON)
        assert r.status_code == 200, r.text
        assert await errors_counted(client, "too_large") == 0


@SQLITE_ONLY
async def test_unknown_route_is_404_unknown_route(make_settings: Any) -> None:
    """Not `not_found`, which says an item is unknown: a mistyped URL must not read as that."""
    async with running(make_settings()) as (_, client):
        error = the_error(await client.get("/v1/item/x/codes"), 404, "unknown_route")
        assert "GET /v1/item/x/codes" in error["message"]
        assert error["item"] is None
        assert await errors_counted(client, "unknown_route") == 1
        assert await errors_counted(client, "not_found") == 0


@SQLITE_ONLY
async def test_wrong_method_is_405_method_not_allowed(make_settings: Any) -> None:
    async with running(make_settings()) as (_, client):
        r = await client.delete("/v1/items/x/codes")
        error = the_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET"
        assert "DELETE /v1/items/x/codes" in error["message"]
        assert "takes GET" in error["message"]
        assert await errors_counted(client, "method_not_allowed") == 1


@SQLITE_ONLY
async def test_a_bug_is_500_internal(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception no handler expects: the error body, naming its type but not its message."""

    async def broken(*_: Any) -> list[StoredCodes | None]:
        raise RuntimeError("secret detail")

    async with running(make_settings()) as (app, _):
        monkeypatch.setattr(app.state.qarm.store, "get_many", broken)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://qarm") as client:
            error = the_error(await client.get("/v1/items/x/codes"), 500, "internal")
            assert "RuntimeError" in error["message"]
            assert "secret" not in error["message"]
            assert await errors_counted(client, "internal") == 1


def test_every_kind_is_documented() -> None:
    """Clients branch on `kind`: docs/service.md's table lists each one the service answers."""
    doc = (Path(__file__).parents[2] / "docs" / "service.md").read_text()
    documented = set(re.findall(r"^\| \d{3} \| `([a-z_]+)` \|", doc, flags=re.MULTILINE))
    assert documented == set(error_kinds())
