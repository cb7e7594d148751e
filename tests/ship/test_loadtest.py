"""The load test's own parts: its items are valid uploads, its read-back decodes Redis by
docs/store.md exactly as the service writes it, and its pass/fail rule fails when it should."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import redis
from PIL import Image

from loadtest.media import MediaPool
from loadtest.run import check_thresholds, decode_item
from runtime.decode import decode_wav
from service.settings import Settings
from store.redis_store import Keys
from tests.keys import own_prefix
from tests.service.conftest import auth, make_bundle, running

TOKEN = "loadtest-token-0123456789"


def test_media_is_a_jpeg_cover_and_a_short_wav() -> None:
    pool = MediaPool(seed=3, covers=2, clips=2)
    with Image.open(io.BytesIO(base64.b64decode(pool.covers[0]))) as img:
        assert img.format == "JPEG"
        assert img.size == (160, 120)
    wav, seconds = decode_wav(base64.b64decode(pool.clips[0]), 8000, 1600, 60.0)
    assert seconds == pytest.approx(1.0)
    assert float(abs(wav).max()) > 0.01
    items = [pool.item(f"x{i}") for i in range(50)]
    assert all(item["text"] for item in items)
    assert sum("image" in item for item in items) > 30
    assert 5 < sum("audio" in item for item in items) < 45


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_uploads_are_accepted_and_read_back_from_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """What the locust users post is accepted, and decode_item reads Redis's bytes back as
    the codes the service answered."""
    bundle = make_bundle(tmp_path / "artifacts", tmp_path / "work", seed=4)
    pool = MediaPool(seed=5, covers=4, clips=2)
    with own_prefix(redis_url) as prefix:
        settings = Settings(
            bundle=str(bundle),
            redis_url=redis_url,
            redis_prefix=prefix,
            max_wait_ms=1.0,
            tokens=[{"name": "lt", "token": TOKEN, "scopes": ["write", "read"]}],
        )
        async with running(settings) as (_, client):
            items = [pool.item(f"lt-{i}") for i in range(12)]
            r = await client.post("/v1/items", json={"items": items}, headers=auth(TOKEN))
            assert r.status_code == 200, r.text
            body = r.json()
        client_r = redis.Redis.from_url(redis_url)
        try:
            for codes in body["items"]:
                key = Keys(prefix).items(body["bundle_version"], codes["id"])
                value = client_r.hget(key, codes["id"])
                assert isinstance(value, bytes)
                assert decode_item(value) == (codes["rq"], codes["vq"], codes["suffix"])
        finally:
            client_r.close()


def test_decode_item_refuses_another_format() -> None:
    with pytest.raises(ValueError, match="format 2"):
        decode_item(bytes([2, 1, 1, 0, 0, 0, 0, 0, 5, 0, 1, 0, 0, 0]))


def stats(failures: int, p99_items: float, reads: int = 900) -> dict[str, dict[str, str]]:
    row = {"Request Count": "100", "Failure Count": str(failures), "99%": str(p99_items)}
    read = {"Request Count": str(reads), "Failure Count": "0", "99%": "20"}
    total = {"Request Count": str(100 + reads), "Failure Count": str(failures), "99%": "50"}
    return {"POST /v1/items": row, "POST /v1/codes:batchGet": read, "Aggregated": total}


THRESHOLDS = {
    "max_error_rate": 0.0,
    "p99_ms": {"POST /v1/items": 1000, "POST /v1/codes:batchGet": 100},
    "min_requests": {"POST /v1/items": 50, "POST /v1/codes:batchGet": 500},
}


def test_thresholds_pass_a_clean_run_and_fail_errors_slowness_and_idleness() -> None:
    assert check_thresholds(stats(0, 900), THRESHOLDS) == []
    assert "1 of 1000 requests failed" in check_thresholds(stats(1, 900), THRESHOLDS)[0]
    assert "p99 1200 ms above" in check_thresholds(stats(0, 1200), THRESHOLDS)[0]
    assert "the run did not load" in check_thresholds(stats(0, 900, reads=10), THRESHOLDS)[0]


def test_thresholds_file_names_the_locust_routes() -> None:
    root = Path(__file__).resolve().parents[2]
    thresholds = json.loads((root / "loadtest" / "thresholds.json").read_text())
    assert set(thresholds["p99_ms"]) == {"POST /v1/items", "POST /v1/codes:batchGet"}
    assert thresholds["max_error_rate"] == 0.0
