"""The OpenAPI document declares every answer a route gives: its error statuses with the error
body's schema, and /metrics as text; real error answers are declared and match that schema."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema_rs
import pytest

from codebooks.sid import ID_PATTERN
from service.app import create_app
from service.errors import ErrorBody
from tests.service.conftest import auth, running

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])  # no store plays a part

READ = "r" * 20
WRITE = "w" * 20
ADMIN = "a" * 20
LIMIT = 2000
ERROR_REF = "#/components/schemas/ErrorBody"

# route -> the error statuses it answers (docs/service.md's API and error tables)
AUTH = {401, 403, 500, 503}
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/items"): AUTH | {400, 408, 413, 422},
    ("put", "/v1/items/{item_id}"): AUTH | {400, 408, 413, 422},
    ("get", "/v1/items/{item_id}/codes"): AUTH | {404, 422},
    ("post", "/v1/codes:batchGet"): AUTH | {400, 408, 413, 422},
    ("get", "/v1/codes/rq/{prefix}/items"): AUTH | {400, 422},
    ("get", "/v1/sids/{sid}"): AUTH | {400, 404},
    ("post", "/admin/reload"): AUTH | {400, 408, 409, 413, 422},
}
# route -> its request body's schema, and whether the body is required
BODIES: dict[tuple[str, str], tuple[str, bool]] = {
    ("post", "/v1/items"): ("ItemsIn", True),
    ("put", "/v1/items/{item_id}"): ("ItemBody", True),
    ("post", "/v1/codes:batchGet"): ("BatchGetIn", True),
    ("post", "/admin/reload"): ("ReloadIn", False),
}


def tokens() -> list[dict[str, Any]]:
    return [
        {"name": "reader", "token": READ, "scopes": ["read"]},
        {"name": "writer", "token": WRITE, "scopes": ["write", "read"]},
        {"name": "admin", "token": ADMIN, "scopes": ["admin"]},
    ]


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, p): op for p, ops in doc["paths"].items() for m, op in ops.items()}


def schema_ref(response: dict[str, Any]) -> str | None:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return ref if isinstance(ref, str) else None


@SQLITE_ONLY
def test_every_route_declares_its_error_answers(make_settings: Any) -> None:
    doc = create_app(make_settings(tokens=tokens())).openapi()
    ops = operations(doc)
    assert set(EXPECTED) <= set(ops)
    for key, statuses in EXPECTED.items():
        responses = ops[key]["responses"]
        declared = {int(s) for s in responses}
        assert statuses | {200} <= declared, key
        for status in declared - {200}:
            assert schema_ref(responses[str(status)]) == ERROR_REF, (key, status)
        assert "Retry-After" in responses["503"]["headers"], key
        assert "WWW-Authenticate" in responses["401"]["headers"], key
    # every error answer of every route is the error body (the probes' 503 excepted)
    for (method, path), op in ops.items():
        for status, response in op["responses"].items():
            if int(status) >= 400 and path not in ("/healthz", "/readyz"):
                assert schema_ref(response) == ERROR_REF, (method, path, status)
    # FastAPI's own 422 body is never answered, so never declared
    assert "HTTPValidationError" not in json.dumps(doc)
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert set(schemas["ErrorInfo"]["required"]) == {"kind", "message", "item"}
    for probe in ("/healthz", "/readyz"):
        assert schema_ref(ops["get", probe]["responses"]["503"]) == "#/components/schemas/Health"
    metrics = ops["get", "/metrics"]["responses"]
    assert set(metrics) == {"200"}
    assert list(metrics["200"]["content"]) == ["text/plain"]


@SQLITE_ONLY
def test_every_request_body_is_declared_with_its_schema(make_settings: Any) -> None:
    """Routes read their bodies as dependencies (after auth), which FastAPI does not document
    by itself: each still declares its body, and every schema it refers to is in the document."""
    doc = create_app(make_settings()).openapi()
    ops = operations(doc)
    schemas = doc["components"]["schemas"]
    for key, op in ops.items():
        if key not in BODIES:
            assert "requestBody" not in op, key
    for key, (model, required) in BODIES.items():
        body = ops[key]["requestBody"]
        assert body["required"] is required, key
        assert list(body["content"]) == ["application/json"], key
        assert schema_ref(body) == f"#/components/schemas/{model}", key
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas), refs - set(schemas)
    assert schemas["ItemsIn"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/ItemIn"
    }
    # patterns in JSON Schema's dialect, ECMA-262 (no `\\z`; its `$` is the very end), holding
    # the rule the service checks (ID_PATTERN, for Rust's regex)
    id_schema = schemas["ItemIn"]["properties"]["id"]
    assert id_schema["pattern"] == ID_PATTERN.removesuffix("\\z") + "$"
    assert schemas["BatchGetIn"]["properties"]["ids"]["items"]["pattern"] == id_schema["pattern"]
    assert "\\z" not in json.dumps(doc)
    valid = jsonschema_rs.validator_for(id_schema).is_valid
    assert [valid(v) for v in ("abc", "a:b.c-1_", "abc\n", "a b", "")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert schemas["ItemIn"]["required"] == ["id"]


@SQLITE_ONLY
async def test_real_error_answers_are_declared(make_settings: Any) -> None:
    settings = make_settings(tokens=tokens(), max_body_bytes=LIMIT)
    async with running(settings) as (_, client):
        doc = (await client.get("/openapi.json")).json()
        ops = operations(doc)
        item = {"items": [{"id": "x", "text": "cat"}]}
        answers: list[tuple[str, str, httpx.Response]] = [
            ("post", "/v1/items", await client.post("/v1/items", json=item)),
            (
                "get",
                "/v1/items/{item_id}/codes",
                await client.get("/v1/items/nope/codes", headers=auth(READ)),
            ),
            (
                "post",
                "/v1/items",
                await client.post("/v1/items", content=b" " * (LIMIT + 1), headers=auth(WRITE)),
            ),
            (
                "post",
                "/v1/items",
                await client.post("/v1/items", json={"items": []}, headers=auth(WRITE)),
            ),
            (
                "put",
                "/v1/items/{item_id}",
                await client.put("/v1/items/x", json={"nope": 1}, headers=auth(WRITE)),
            ),
            ("get", "/v1/sids/{sid}", await client.get("/v1/sids/1-2", headers=auth(READ))),
            ("post", "/admin/reload", await client.post("/admin/reload", headers=auth(READ))),
        ]
        seen = set()
        for method, path, r in answers:
            seen.add(r.status_code)
            declared = ops[method, path]["responses"]
            assert str(r.status_code) in declared, (method, path, r.status_code)
            assert schema_ref(declared[str(r.status_code)]) == ERROR_REF
            body = ErrorBody.model_validate(r.json())
            assert body.model_dump(mode="json") == r.json()
        assert {400, 401, 403, 404, 413, 422} <= seen
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "text/plain" in ops["get", "/metrics"]["responses"]["200"]["content"]
