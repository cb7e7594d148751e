"""The service on a real exported encoder (models/export), not the tiny test one.

Runs against `QARM_TEST_REAL_BUNDLE`, or else the newest bundle under ./artifacts whose
manifest has a multimodal encoder (what `make artifacts` on the models side writes); it is
skipped, saying so, when there is none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from codebooks import load_bundle
from tests.service.conftest import png_b64, running, wav_b64

pytestmark = pytest.mark.anyio


def real_bundle() -> Path | None:
    given = os.environ.get("QARM_TEST_REAL_BUNDLE")
    if given:
        return Path(given)
    root = Path("artifacts")
    candidates = sorted(p for p in root.glob("*") if (p / "manifest.json").is_file())
    for path in reversed(candidates):
        encoder = json.loads((path / "manifest.json").read_text()).get("encoder")
        if encoder and encoder.get("mode") == "multimodal":
            return path
    return None


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_real_encoder_serves_every_modality(make_settings: Any, store_kind: str) -> None:
    assert store_kind == "sqlite"
    path = real_bundle()
    if path is None:
        pytest.skip("no bundle with a real encoder (set QARM_TEST_REAL_BUNDLE or make artifacts)")
    manifest = load_bundle(path).manifest
    spec = manifest.encoder or {}
    rate = int(spec["audio_sample_rate"])
    items = [
        {"id": "real-text", "text": "a cat dancing to summer music"},
        {"id": "real-image", "image": png_b64(1, size=(80, 60))},
        {"id": "real-audio", "audio": wav_b64(2, seconds=0.5, rate=rate)},
        {"id": "real-all", "text": "city at night", "image": png_b64(3), "audio": wav_b64(4)},
        {"id": "real-long", "text": "word " * 500},  # truncated to max_text_tokens
    ]
    async with running(make_settings(bundle=str(path))) as (_, client):
        r = await client.post("/v1/items", json={"items": items})
        assert r.status_code == 200, r.text
        codes = r.json()["items"]
        for c in codes:
            assert len(c["vq"]) == manifest.k
            assert len(c["rq"]) == manifest.levels
            assert all(0 <= v < manifest.n_items for v in c["vq"])
        assert len({tuple(c["rq"]) for c in codes}) > 1  # different content, different codes
        alone = await client.put("/v1/items/real-text", json={"text": items[0]["text"]})
        assert alone.json()["suffix"] == codes[0]["suffix"]
        text = (await client.get("/metrics")).text
        assert "qarm_encoder_info{provider=" in text
