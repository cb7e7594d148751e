"""The API against both stores: writes, reads, reverse lookups, auth, health and metrics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from codebooks import Quantizer, load_bundle
from codebooks.clustered import clustered_embeddings
from loadtest.tiny_encoder import FEATURES
from service.schemas import Codes
from tests.service.conftest import (
    ADMIN,
    DIM,
    READ,
    WRITE,
    auth,
    metric_value,
    png_b64,
    running,
    wav_b64,
)

pytestmark = pytest.mark.anyio


def tokens() -> list[dict[str, Any]]:
    return [
        {"name": "reader", "token": READ, "scopes": ["read"]},
        {"name": "writer", "token": WRITE, "scopes": ["write", "read"]},
        {"name": "admin", "token": ADMIN, "scopes": ["admin"]},
    ]


async def test_post_get_and_batch_get(make_settings: Any) -> None:
    items: list[dict[str, Any]] = [
        {"id": "text-1", "text": "red cat dance"},
        {"id": "img-1", "image": png_b64(1)},
        {"id": "jpg-1", "image": png_b64(2, fmt="JPEG"), "text": "blue bird"},
        {"id": "wav-1", "audio": wav_b64(3)},
        {"id": "all:1", "text": "night city", "image": png_b64(4), "audio": wav_b64(5)},
        {"id": "emb.1", "embedding": [float(v) for v in np.linspace(-1, 1, DIM)]},
    ]
    async with running(make_settings()) as (_, client):
        r = await client.post("/v1/items", json={"items": items})
        assert r.status_code == 200, r.text
        body = r.json()
        version = body["bundle_version"]
        assert [c["id"] for c in body["items"]] == [i["id"] for i in items]
        for codes in body["items"]:
            assert set(codes) == set(Codes.model_fields)  # the documented schema, all of it
            assert len(codes["vq"]) == 5
            assert len(codes["rq"]) == 3
            assert all(0 <= c < 8 for c in codes["rq"])
            assert codes["sid"] == "-".join(map(str, codes["rq"])) + f"-{codes['suffix']}"
        # the same item posted again gets the same codes and keeps its suffix
        again = await client.post("/v1/items", json={"items": items[:3]})
        assert again.json()["items"] == body["items"][:3]
        got = await client.get("/v1/items/jpg-1/codes")
        assert got.status_code == 200
        assert got.json() == body["items"][2]
        missing = await client.get("/v1/items/nobody/codes")
        assert missing.status_code == 404
        assert missing.json()["error"]["kind"] == "not_found"
        many = await client.post(
            "/v1/codes:batchGet", json={"ids": ["wav-1", "nobody", "text-1", "wav-1"]}
        )
        assert many.status_code == 200
        answer = many.json()
        assert answer["bundle_version"] == version
        assert answer["items"] == [body["items"][3], None, body["items"][0], body["items"][3]]
        assert list(answer["items"][0]) == list(Codes.model_fields)  # written from the bytes


async def test_embedding_codes_match_the_quantizer(make_settings: Any, bundles: Any) -> None:
    """An item sent as an embedding gets exactly the codes codebooks' Quantizer gives it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, DIM)).astype(np.float32)
    vq, rq = Quantizer(load_bundle(bundles["a"]), gpu="off").encode(x)
    async with running(make_settings()) as (_, client):
        items = [{"id": f"e{i}", "embedding": x[i].tolist()} for i in range(4)]
        r = await client.post("/v1/items", json={"items": items})
        assert r.status_code == 200, r.text
        for i, codes in enumerate(r.json()["items"]):
            assert codes["vq"] == vq[i].tolist()
            assert codes["rq"] == rq[i].tolist()


async def test_put_item(make_settings: Any) -> None:
    async with running(make_settings()) as (_, client):
        r = await client.put("/v1/items/put-me", json={"text": "green fish"})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "put-me"
        got = await client.get("/v1/items/put-me/codes")
        assert got.json() == r.json()
        bad = await client.put("/v1/items/bad id!", json={"text": "x"})
        assert bad.status_code == 422


async def test_catalog_item_keeps_its_bundle_suffix(make_settings: Any, bundles: Any) -> None:
    bundle = load_bundle(bundles["a"])
    catalog = clustered_embeddings(600, DIM, groups=6, subgroups=3, seed=1)  # bundle a's input
    # the rows with the largest suffixes: items that collide with earlier catalog items
    rows = np.argsort(-bundle.sid_suffix)[:3]
    async with running(make_settings()) as (_, client):
        items = [
            {"id": str(catalog.ids[r]), "embedding": catalog.embeddings[r].tolist()} for r in rows
        ]
        body = (await client.post("/v1/items", json={"items": items})).json()
        for r, codes in zip(rows, body["items"], strict=True):
            assert codes["rq"] == bundle.rq_codes[r].tolist()
            assert codes["suffix"] == int(bundle.sid_suffix[r])


async def test_reverse_lookups(make_settings: Any, bundles: Any) -> None:
    bundle = load_bundle(bundles["a"])
    async with running(make_settings()) as (_, client):
        # a catalog item is found by its semantic ID and by each of its prefixes
        row = 5
        rq, suffix = bundle.rq_codes[row].tolist(), int(bundle.sid_suffix[row])
        sid = "-".join(map(str, rq)) + f"-{suffix}"
        r = await client.get(f"/v1/sids/{sid}")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == str(bundle.item_ids[row])
        for level in range(1, 4):
            prefix = "-".join(map(str, rq[:level]))
            r = await client.get(f"/v1/codes/rq/{prefix}/items", params={"limit": 1000})
            assert r.status_code == 200, r.text
            assert str(bundle.item_ids[row]) in r.json()["items"]
            expected = int((bundle.rq_codes[:, :level] == rq[:level]).all(axis=1).sum())
            assert len(r.json()["items"]) == expected
        capped = await client.get(f"/v1/codes/rq/{rq[0]}/items", params={"limit": 2})
        assert len(capped.json()["items"]) == 2
        # a new item is found by its semantic ID and its prefixes
        posted = await client.post("/v1/items", json={"items": [{"id": "new", "text": "dog"}]})
        codes = posted.json()["items"][0]
        r = await client.get(f"/v1/sids/{codes['sid']}")
        assert r.json()["id"] == "new"
        full = "-".join(map(str, codes["rq"]))
        r = await client.get(f"/v1/codes/rq/{full}/items", params={"limit": 1000})
        assert "new" in r.json()["items"]
        # an item whose content changes leaves its old semantic ID and prefixes
        for text in ("summer beach music", "winter night news", "fast game sport", "cook"):
            moved = await client.put("/v1/items/new", json={"text": text})
            if moved.json()["rq"] != codes["rq"]:
                break
        moved_codes = moved.json()
        assert moved_codes["rq"] != codes["rq"]
        assert (await client.get(f"/v1/sids/{codes['sid']}")).status_code == 404
        assert (await client.get(f"/v1/sids/{moved_codes['sid']}")).json()["id"] == "new"
        r = await client.get(f"/v1/codes/rq/{full}/items", params={"limit": 1000})
        assert "new" not in r.json()["items"]
        # malformed prefixes and semantic IDs: 400
        for bad in ("x", "1--2", "1-2-3-4", "9", "-1", "1-2-"):
            r = await client.get(f"/v1/codes/rq/{bad}/items")
            assert r.status_code == 400, (bad, r.text)
        for bad in ("1-2-3", "1-2-3-4-5", "a-b-c-d"):
            assert (await client.get(f"/v1/sids/{bad}")).status_code == 400
        # a leading zero names no key in the store: refused, naming the form the store writes
        zero = f"0{rq[0]}"
        r = await client.get(f"/v1/codes/rq/{zero}/items")
        assert r.status_code == 400
        assert "without leading zeros" in r.json()["error"]["message"]
        assert (await client.get(f"/v1/sids/0{sid}")).status_code == 400
        over = await client.get("/v1/codes/rq/1/items", params={"limit": 100_000})
        assert over.status_code == 400


async def test_auth_scopes(make_settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running(make_settings(tokens=tokens())) as (_, client):
        item = {"items": [{"id": "a1", "text": "cat"}]}
        assert (await client.post("/v1/items", json=item)).status_code == 401
        bad = await client.post("/v1/items", json=item, headers=auth("x" * 20))
        assert bad.status_code == 401
        assert (await client.post("/v1/items", json=item, headers=auth(READ))).status_code == 403
        assert (await client.post("/v1/items", json=item, headers=auth(WRITE))).status_code == 200
        assert (await client.get("/v1/items/a1/codes")).status_code == 401
        assert (await client.get("/v1/items/a1/codes", headers=auth(ADMIN))).status_code == 403
        assert (await client.get("/v1/items/a1/codes", headers=auth(READ))).status_code == 200
        ids = {"ids": ["a1"]}
        assert (await client.post("/v1/codes:batchGet", json=ids)).status_code == 401
        r = await client.post("/v1/codes:batchGet", json=ids, headers=auth(READ))
        assert r.status_code == 200
        assert (await client.post("/admin/reload", headers=auth(WRITE))).status_code == 403
        assert (await client.get("/v1/sids/1-2-3-0")).status_code == 401
        # health and metrics stay open for probes and scrapers
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
    for token in (READ, WRITE, ADMIN, "x" * 20):
        assert token not in caplog.text
    names = {getattr(r, "token", None) for r in caplog.records if r.name == "service.app"}
    assert {"reader", "writer"} <= names  # the access log names the token that was used


async def test_no_tokens_is_loud(make_settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with running(make_settings()):
        pass
    assert any(r.levelname == "WARNING" and "NO AUTH" in r.getMessage() for r in caplog.records)


async def test_health_and_metrics(make_settings: Any) -> None:
    async with running(make_settings()) as (_, client):
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        await client.post("/v1/items", json={"items": [{"id": "m1", "text": "song"}]})
        await client.get("/v1/items/zzz/codes")
        text = (await client.get("/metrics")).text
        labels = {"route": "/v1/items", "method": "POST", "status": "200"}
        assert metric_value(text, "qarm_requests_total", labels) == 1
        assert metric_value(text, "qarm_request_duration_seconds_count", labels) == 1
        assert metric_value(text, "qarm_errors_total", {"kind": "not_found"}) == 1
        assert metric_value(text, "qarm_batch_size_items_count") >= 1
        assert metric_value(text, "qarm_items_encoded_total", {"source": "content"}) == 1
        for stage in ("decode", "encode", "quantize", "store"):
            assert metric_value(text, "qarm_stage_duration_seconds_count", {"stage": stage}) >= 1
        assert metric_value(text, "qarm_queue_wait_seconds_count") >= 1
        assert "qarm_queue_depth_items" in text
        assert metric_value(text, "qarm_queue_capacity_items") == make_settings().max_queue
        assert 'qarm_encoder_info{provider="CPUExecutionProvider"} 1.0' in text
        assert "qarm_bundle_info{" in text
        assert "process_cpu_seconds_total" in text
        r = await client.get("/v1/items/zzz/codes", headers={"X-Request-ID": "abc123"})
        assert r.headers["x-request-id"] == "abc123"
        schema = (await client.get("/openapi.json")).json()
        assert {"/v1/items", "/v1/codes:batchGet", "/v1/sids/{sid}", "/admin/reload"} <= set(
            schema["paths"]
        )
        batch_get = schema["paths"]["/v1/codes:batchGet"]["post"]["responses"]["200"]
        assert "BatchGetOut" in str(batch_get)


async def test_bundle_without_encoder_takes_embeddings(make_settings: Any, bundles: Any) -> None:
    async with running(make_settings(bundle=str(bundles["plain"]))) as (_, client):
        r = await client.post("/v1/items", json={"items": [{"id": "t", "text": "cat"}]})
        assert r.status_code == 422
        assert "has no encoder" in r.json()["error"]["message"]
        emb = [1.0] + [0.0] * (DIM - 1)
        r = await client.post("/v1/items", json={"items": [{"id": "e", "embedding": emb}]})
        assert r.status_code == 200


async def test_features_encoder(make_settings: Any, bundles: Any) -> None:
    """A bundle whose encoder takes upstream features (mode "features", int8_file null, so
    encoder_int8 falls back to `file`)."""
    settings = make_settings(bundle=str(bundles["features"]), encoder_int8=True)
    async with running(settings) as (_, client):
        feats = [float(v) for v in np.linspace(-1, 1, FEATURES)]
        r = await client.post("/v1/items", json={"items": [{"id": "f1", "features": feats}]})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"][0]["rq"]) == 3
        again = await client.put("/v1/items/f1", json={"features": feats})
        assert again.json() == r.json()["items"][0]
        bad = await client.post("/v1/items", json={"items": [{"id": "f2", "features": feats[:-1]}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["item"] == {"index": 0, "id": "f2", "field": "features"}
        text = await client.post("/v1/items", json={"items": [{"id": "t", "text": "cat"}]})
        assert text.status_code == 422
        assert "takes features" in text.json()["error"]["message"]
        emb = [1.0] + [0.0] * (DIM - 1)
        ok = await client.post("/v1/items", json={"items": [{"id": "e", "embedding": emb}]})
        assert ok.status_code == 200


async def test_features_to_a_multimodal_bundle(make_settings: Any) -> None:
    async with running(make_settings()) as (_, client):
        r = await client.post(
            "/v1/items", json={"items": [{"id": "f", "features": [1.0] * FEATURES}]}
        )
        assert r.status_code == 422
        assert r.json()["error"]["item"]["field"] == "features"


async def test_failure_series_exist_at_zero_from_the_first_scrape(
    make_settings: Any, store_kind: str
) -> None:
    """Dashboards and rate() need the series before the first failure, not "no data"."""
    async with running(make_settings()) as (_, client):
        text = (await client.get("/metrics")).text
    assert 'qarm_errors_total{kind="overloaded"} 0.0' in text
    assert 'qarm_errors_total{kind="store_unavailable"} 0.0' in text
    assert f'qarm_store_errors_total{{op="write",store="{store_kind}"}} 0.0' in text
    assert 'qarm_items_dropped_total{reason="deadline"} 0.0' in text
    assert 'qarm_reloads_total{result="failed"} 0.0' in text
