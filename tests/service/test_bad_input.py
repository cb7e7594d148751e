"""Every kind of bad input: 422 naming the item index, id and field; nothing written.

(A body over the size limit, 413, is in test_errors.py.)"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.service.conftest import DIM, png_b64, running, wav_b64

pytestmark = pytest.mark.anyio

GOOD = {"id": "good-0", "text": "red cat"}
LIMITS = {
    "max_text_chars": 50,
    "max_image_bytes": 20_000,
    "max_image_pixels": 10_000,
    "max_audio_s": 1.0,
    "max_items_per_request": 3,
    "max_batch_get": 5,
    "max_body_bytes": 200_000,
}

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, bad item, field named, words the message must hold)
    ("broken base64 image", {"id": "b1", "image": "@@not-base64@@"}, "image", "base64"),
    (
        "image not an image",
        {"id": "b2", "image": base64.b64encode(b"x" * 99).decode()},
        "image",
        "JPEG or PNG",
    ),
    (
        "image too many pixels",
        {"id": "b3", "image": png_b64(1, size=(200, 100), flat=True)},
        "image",
        "limit of 10000",
    ),
    (
        "image too many bytes",
        {"id": "b4", "image": png_b64(1, size=(99, 99))},
        "image",
        "limit of 20000",
    ),
    (
        "audio not a WAV",
        {"id": "b5", "audio": base64.b64encode(b"ID3 mp3 data").decode()},
        "audio",
        "WAV",
    ),
    ("audio broken base64", {"id": "b6", "audio": "a"}, "audio", "base64"),
    (
        "audio too long",
        {"id": "b7", "audio": wav_b64(1, seconds=1.5, rate=8000)},
        "audio",
        "limit of 1 s",
    ),
    (
        "embedding too short",
        {"id": "b8", "embedding": [1.0] * (DIM - 1)},
        "embedding",
        f"d is {DIM}",
    ),
    (
        "embedding too long",
        {"id": "b9", "embedding": [1.0] * (DIM + 1)},
        "embedding",
        f"d is {DIM}",
    ),
    ("embedding zero", {"id": "b10", "embedding": [0.0] * DIM}, "embedding", "zero"),
    (
        "embedding and text",
        {"id": "b11", "embedding": [1.0] * DIM, "text": "x"},
        "embedding",
        "either",
    ),
    ("text too long", {"id": "b12", "text": "cat " * 20}, "text", "limit of 50"),
    ("nothing to encode", {"id": "b13"}, "item", "no text"),
    ("id with a space", {"id": "bad id", "text": "x"}, "id", "pattern"),
    ("id too long", {"id": "x" * 129, "text": "x"}, "id", "pattern"),
    ("id empty", {"id": "", "text": "x"}, "id", "pattern"),
    ("unknown field", {"id": "b14", "text": "x", "colour": "red"}, "colour", "xtra"),
    ("text not a string", {"id": "b15", "text": 12}, "text", "string"),
    ("id twice in one request", {"id": "good-0", "text": "dog"}, "id", "once per request"),
]


@pytest.mark.parametrize(("case", "bad", "field", "words"), CASES, ids=[c[0] for c in CASES])
async def test_bad_item_is_named_and_nothing_is_written(
    make_settings: Any, case: str, bad: dict[str, Any], field: str, words: str
) -> None:
    async with running(make_settings(**LIMITS)) as (_, client):
        r = await client.post("/v1/items", json={"items": [GOOD, bad]})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["kind"] == "invalid_input"
        assert error["item"]["index"] == 1
        assert error["item"]["field"] == field
        if isinstance(bad.get("id"), str) and field != "id":
            assert error["item"]["id"] == bad["id"]
        assert words.lower() in error["message"].lower(), error["message"]
        assert (await client.get("/v1/items/good-0/codes")).status_code == 404, case


async def test_nan_embedding(make_settings: Any) -> None:
    """JSON has no NaN, but Python's parser takes the `NaN` literal: it must not get through."""
    values = ", ".join(["NaN"] + ["1.0"] * (DIM - 1))
    body = '{"items": [{"id": "good-0", "text": "cat"}, {"id": "nan", "embedding": [VALUES]}]}'
    body = body.replace("VALUES", values)
    async with running(make_settings()) as (_, client):
        r = await client.post(
            "/v1/items", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["item"] == {"index": 1, "id": "nan", "field": "embedding"}
        assert (await client.get("/v1/items/good-0/codes")).status_code == 404


async def test_request_limits(make_settings: Any) -> None:
    async with running(make_settings(**LIMITS)) as (_, client):
        many = {"items": [{"id": f"i{i}", "text": "cat"} for i in range(4)]}
        r = await client.post("/v1/items", json=many)
        assert r.status_code == 422
        assert "limit of 3" in r.json()["error"]["message"]
        assert (await client.get("/v1/items/i0/codes")).status_code == 404
        assert (await client.post("/v1/items", json={"items": []})).status_code == 422
        assert (await client.post("/v1/items", content=b"{not json")).status_code == 422
        r = await client.post("/v1/codes:batchGet", json={"ids": [f"i{i}" for i in range(6)]})
        assert r.status_code == 422
        assert "limit of 5" in r.json()["error"]["message"]
