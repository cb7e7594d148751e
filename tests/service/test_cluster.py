"""The service on a real 3-master Redis Cluster: activation seeding, uploads, a batch read of
1,000 ids over every master, reverse lookups; and a Redis that lost its data gets the active
version back from the service without waiting for an upload."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from codebooks import load_bundle
from tests.service.conftest import running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("store_kind", ["cluster"], indirect=True)
async def test_the_api_on_a_redis_cluster(make_settings: Any, bundles: dict[str, Path]) -> None:
    bundle = load_bundle(bundles["a"])
    async with running(make_settings(max_items_per_request=500)) as (_, client):
        ids = [f"cl:{n}" for n in range(1000)]
        texts = ["red cat song", "blue sea news", "fast car game", "warm soup cook"]
        for start in (0, 500):
            items = [{"id": i, "text": texts[n % 4]} for n, i in enumerate(ids[start:][:500])]
            r = await client.post("/v1/items", json={"items": items})
            assert r.status_code == 200, r.text
        posted = {c["id"]: c for c in r.json()["items"]}

        r = await client.post("/v1/codes:batchGet", json={"ids": ids[::-1]})
        assert r.status_code == 200, r.text
        got = r.json()["items"]
        assert [g["id"] for g in got] == ids[::-1]
        assert all(got[999 - n]["rq"] == posted[i]["rq"] for n, i in enumerate(ids[500:], 500))

        codes = posted["cl:999"]
        assert (await client.get(f"/v1/sids/{codes['sid']}")).json()["id"] == "cl:999"
        prefix = "-".join(map(str, codes["rq"][:1]))
        r = await client.get(f"/v1/codes/rq/{prefix}/items", params={"limit": 1000})
        assert r.status_code == 200, r.text
        assert "cl:999" in r.json()["items"]
        # a catalog item, seeded at activation, by its semantic ID
        sid = "-".join(map(str, bundle.rq_codes[3].tolist())) + f"-{int(bundle.sid_suffix[3])}"
        assert (await client.get(f"/v1/sids/{sid}")).json()["id"] == str(bundle.item_ids[3])


@pytest.mark.parametrize("store_kind", ["redis"], indirect=True)
async def test_a_redis_that_lost_its_data_gets_the_active_version_back(
    make_settings: Any, redis_url: str, redis_prefix: str
) -> None:
    async with running(make_settings(follow_poll_s=0.1)) as (app, client):
        version = app.state.qarm.engine.version
        r = await client.post("/v1/items", json={"items": [{"id": "kept", "text": "red cat"}]})
        assert r.status_code == 200, r.text
        direct = redis.Redis.from_url(redis_url)
        try:
            direct.delete(*direct.scan_iter(match=f"{redis_prefix}:*"))  # as if restarted empty
            for _ in range(200):
                if direct.get(f"{redis_prefix}:active") is not None:
                    break
                await asyncio.sleep(0.05)
            assert direct.get(f"{redis_prefix}:active") == version.encode()
            assert direct.hget(f"{redis_prefix}:{version}:params", "layout") == b"2"
        finally:
            direct.close()
