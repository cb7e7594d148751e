"""A corpus of hostile item contents, each answered with its documented refusal naming item and
field, never a 500, and nothing of the request written: lone surrogates (which JSON's `\\ud800`
escape makes, and which no tokenizer or UTF-8 answer can carry), numbers JSON should not hold,
images that are bombs, truncated, of another format or in another base64 alphabet. Each body is
sent as raw bytes (an HTTP client would refuse to encode some of them), parsed inline and in the
body-parsing worker process. The issue's other cases: test_hostile.py, test_bodies.py,
test_slow_clients.py, tests/runtime/test_hostile_wav.py, test_image_decoding.py."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import DIM, png_b64, running
from tests.service.test_errors import JSON, the_error

pytestmark = pytest.mark.anyio
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])
ONES = b"," + b",".join([b"1"] * (DIM - 1))  # the rest of a d-float embedding


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    return base64.b64decode(png_b64(5, size=size))


def png_with_chunk(kind: bytes, data: bytes) -> bytes:
    """A small PNG with one more chunk right after its header (IHDR ends at byte 33)."""
    raw = png()
    chunk = struct.pack(">I", len(data)) + kind + data
    return raw[:33] + chunk + struct.pack(">I", zlib.crc32(kind + data)) + raw[33:]


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims another size (its CRC set right): data for 8 x 8."""
    raw = bytearray(png())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr : ihdr + 17])))
    return bytes(raw)


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


def item(fields: bytes, item_id: bytes = b'"x1"') -> bytes:
    return b'{"items": [{"id": "ok-0", "text": "cat"}, {"id": ' + item_id + b", " + fields + b"}]}"


# (case, route, body, status, kind, item (index, id, field) or None, words in the message)
CORPUS: list[tuple[str, str, bytes, int, str, tuple[Any, ...] | None, str]] = [
    (
        "a lone surrogate in text",
        "/v1/items",
        item(b'"text": "red \\ud800 cat"'),
        422,
        "invalid_input",
        (1, "x1", "text"),
        "character 4 is a lone surrogate (U+D800)",
    ),
    (
        "a lone surrogate in an id",
        "/v1/items",
        item(b'"text": "cat"', item_id=b'"x\\udfff"'),
        422,
        "invalid_input",
        (1, "x\\udfff", "id"),
        "unable to parse raw data as a unicode string",
    ),
    (
        "a lone surrogate in a batchGet id",
        "/v1/codes:batchGet",
        b'{"ids": ["ok-0", "\\ud83d"]}',
        422,
        "invalid_input",
        (1, "\\ud83d", "ids"),
        "unable to parse raw data as a unicode string",
    ),
    (
        "NaN in an embedding",
        "/v1/items",
        item(b'"embedding": [NaN' + ONES + b"]"),
        422,
        "invalid_input",
        (1, "x1", "embedding"),
        "value 0 is NaN or infinite",
    ),
    (
        "1e400 in an embedding",
        "/v1/items",
        item(b'"embedding": [1e400' + ONES + b"]"),
        422,
        "invalid_input",
        (1, "x1", "embedding"),
        "value 0 is NaN or infinite",
    ),
    (
        "a string in an embedding",
        "/v1/items",
        item(b'"embedding": ["1.5"' + ONES + b"]"),
        422,
        "invalid_input",
        (1, "x1", "embedding"),
        "valid number",
    ),
    (
        "true in an embedding",
        "/v1/items",
        item(b'"embedding": [true' + ONES + b"]"),
        422,
        "invalid_input",
        (1, "x1", "embedding"),
        "valid number",
    ),
    (
        "a PNG text chunk that inflates to 50 MB",
        "/v1/items",
        item(
            b'"image": "'
            + b64(png_with_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 50_000_000)))
            + b'"'
        ),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "cannot be decoded",
    ),
    (
        "a PNG header claiming 60000 x 60000",
        "/v1/items",
        item(b'"image": "' + b64(png_claiming(60_000, 60_000)) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "too many pixels",
    ),
    (
        "a PNG header claiming 1 x 30000000, over the per-image limit",
        "/v1/items",
        item(b'"image": "' + b64(png_claiming(1, 30_000_000)) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "1x30000000 pixels, more than the limit of 25000000",
    ),
    (
        "a truncated JPEG",
        "/v1/items",
        item(b'"image": "' + b64(jpeg()[:200]) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "cannot be decoded",
    ),
    (
        "a GIF",
        "/v1/items",
        item(b'"image": "' + b64(gif()) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "not a JPEG or PNG image",
    ),
    (
        "URL-safe base64",
        "/v1/items",
        item(b'"image": "' + base64.urlsafe_b64encode(b"\xfb\xff" + png()) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "not valid base64",
    ),
    (
        "base64 broken by a newline",
        "/v1/items",
        item(b'"image": "' + b64(png())[:8] + b"\\n" + b64(png())[8:] + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "not valid base64",
    ),
    (
        "non-ASCII in base64",
        "/v1/items",
        item(b'"image": "\\u00e9' + b64(png()) + b'"'),
        422,
        "invalid_input",
        (1, "x1", "image"),
        "not valid base64",
    ),
]


@SQLITE_ONLY
@pytest.mark.parametrize("inline_bytes", [1 << 20, 0], ids=["inline", "worker"])
async def test_each_hostile_item_gets_its_refusal_and_nothing_is_written(
    make_settings: Any, inline_bytes: int
) -> None:
    async with running(make_settings(parse_inline_bytes=inline_bytes)) as (_, client):
        for case, route, body, status, kind, item_ref, says in CORPUS:
            r = await client.post(route, content=body, headers=JSON)
            error = the_error(r, status, kind)
            if item_ref is not None:
                index, item_id, field = item_ref
                assert error["item"] == {"index": index, "id": item_id, "field": field}, case
            assert says in error["message"], (case, error["message"])
            assert (await client.get("/v1/items/ok-0/codes")).status_code == 404, case
