"""The service on a real exported encoder (models/export), not the tiny test one.

Runs against `QARM_TEST_REAL_BUNDLE`, or else the newest bundle under ./artifacts whose
manifest has a multimodal encoder (what `make artifacts` writes), or else a small bundle that
this module makes with the models pipeline itself (the one place where the service's tests
reach into `models/`: an end-to-end check of the offline pipeline's output). Skipped, saying
so, only when none of these is possible (no torch installed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from catalogs.synthetic import synthetic_catalog
from codebooks import load_bundle
from tests.service.conftest import png_b64, running, wav_b64

pytestmark = pytest.mark.anyio


def built_bundle() -> Path | None:
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


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = built_bundle()
    if path is not None:
        return path
    pytest.importorskip("torch", reason="no bundle with a real encoder, and no torch to make one")
    from models.pipeline import run
    from tests.models.small import small_synthetic

    result = run(small_synthetic(tmp_path_factory.mktemp("real-encoder")))
    assert result is not None
    return result.bundle


async def test_real_encoder_serves_every_modality(make_settings: Any, real_bundle: Path) -> None:
    """On both stores (make_settings follows the store_kind fixture's parameters)."""
    path = real_bundle
    manifest = load_bundle(path).manifest
    assert manifest.encoder is not None
    rate = manifest.encoder.audio_sample_rate
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


async def test_a_text_only_upload_is_encoded_as_the_pipeline_encoded_it(
    make_settings: Any, real_bundle: Path
) -> None:
    """A new upload with the text of a text-only catalog item gets that item's RQ code, and its
    nearest VQ row holds the same text: the service and the offline pipeline (which embeds the
    ranking evaluation's cold items with the exported graph) encode content alike."""
    config = json.loads((real_bundle / "alignment.json").read_text())["config"]
    if config["data"] != "synthetic":
        pytest.skip(f"{real_bundle} was built from {config['data']}, not the synthetic catalog")
    catalog = synthetic_catalog(config["items"], n_groups=config["groups"], seed=config["seed"])
    bundle = load_bundle(real_bundle)
    row_of = {str(item_id): row for row, item_id in enumerate(bundle.item_ids)}
    text_only = ~catalog.has_image & ~catalog.has_audio
    rows = [r for r in np.flatnonzero(text_only) if str(catalog.ids[r]) in row_of][:8]
    assert rows, "the catalog has no text-only item in the bundle"
    texts = catalog.texts(np.array(rows))
    items = [{"id": f"copy-{r}", "text": t} for r, t in zip(rows, texts, strict=True)]
    async with running(make_settings(bundle=str(real_bundle))) as (_, client):
        r = await client.post("/v1/items", json={"items": items})
    assert r.status_code == 200, r.text
    all_texts = catalog.texts(np.arange(len(catalog)))
    for row, text, got in zip(rows, texts, r.json()["items"], strict=True):
        assert got["rq"] == bundle.rq_codes[row_of[str(catalog.ids[row])]].tolist()
        nearest = str(bundle.item_ids[got["vq"][0]])
        assert all_texts[int(nearest.removeprefix("item-"))] == text
