"""Collision-free semantic IDs under concurrency, against a real Redis: 32 parallel uploads
of different items whose RQ tuples collide, spread over two service instances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codebooks import Quantizer, load_bundle
from tests.service.conftest import DIM, running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_32_parallel_uploads_with_colliding_tuples(
    make_settings: Any, bundles: dict[str, Path], store_kind: str
) -> None:
    assert store_kind == "redis"
    bundle = load_bundle(bundles["a"])
    # the tuple of the catalog's most crowded code: new items must start after its suffixes
    row = int(np.argmax(bundle.sid_suffix))
    x = bundle.rq.centroids[np.arange(bundle.manifest.levels), bundle.rq_codes[row]].sum(axis=0)
    _, rq = Quantizer(bundle, gpu="off").encode(x[None, :].astype(np.float32))
    tuple_rows = (bundle.rq_codes == rq[0]).all(axis=1)
    first_free = int(bundle.sid_suffix[tuple_rows].max()) + 1 if tuple_rows.any() else 0

    # one instance answers per item (batch of 1), the other in batches: both allocate at once
    one_by_one = make_settings(max_batch=1)
    batched = make_settings(max_batch=8, max_wait_ms=20.0)
    assert one_by_one.redis_prefix == batched.redis_prefix
    async with running(one_by_one) as (_, c1), running(batched) as (_, c2):
        emb = x.astype(float).tolist()
        assert len(emb) == DIM
        posts = [
            (c1 if i % 2 else c2).post(
                "/v1/items", json={"items": [{"id": f"u{i}", "embedding": emb}]}
            )
            for i in range(32)
        ]
        answers = await asyncio.gather(*posts)
        assert [a.status_code for a in answers] == [200] * 32
        codes = [a.json()["items"][0] for a in answers]
        assert all(c["rq"] == rq[0].tolist() for c in codes)
        suffixes = sorted(c["suffix"] for c in codes)
        assert suffixes == list(range(first_free, first_free + 32))
        assert len({c["sid"] for c in codes}) == 32
        for c in codes:  # every semantic ID leads back to its own item
            assert (await c1.get(f"/v1/sids/{c['sid']}")).json()["id"] == c["id"]
        # posted again, in parallel, each item keeps its suffix
        again = await asyncio.gather(
            *(
                (c2 if i % 2 else c1).post(
                    "/v1/items", json={"items": [{"id": f"u{i}", "embedding": emb}]}
                )
                for i in range(32)
            )
        )
        assert [a.json()["items"][0]["suffix"] for a in again] == [c["suffix"] for c in codes]
