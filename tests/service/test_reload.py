"""POST /admin/reload: an atomic switch under concurrent load, with no failed request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from codebooks import load_bundle
from tests.service.conftest import ADMIN, WRITE, auth, running

pytestmark = pytest.mark.anyio


async def test_reload_under_load_fails_nothing(
    make_settings: Any, bundles: dict[str, Path]
) -> None:
    version_a = load_bundle(bundles["a"]).version
    version_b = load_bundle(bundles["b"]).version
    tokens = [
        {"name": "w", "token": WRITE, "scopes": ["write", "read"]},
        {"name": "a", "token": ADMIN, "scopes": ["admin"]},
    ]
    settings = make_settings(tokens=tokens, max_batch=4, max_wait_ms=1.0)
    statuses: list[int] = []
    versions: list[str] = []
    stop = asyncio.Event()

    async def writer(client: Any, n: int) -> None:
        i = 0
        while not stop.is_set() or i < 3:
            body = {"items": [{"id": f"w{n}-{i}", "text": "blue dog summer"}]}
            r = await client.post("/v1/items", json=body, headers=auth(WRITE))
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions.append(r.json()["bundle_version"])
            i += 1

    async with running(settings) as (_, client):
        writers = [asyncio.create_task(writer(client, n)) for n in range(8)]
        while len(statuses) < 16:  # load is running
            await asyncio.sleep(0.01)
        r = await client.post(
            "/admin/reload", json={"bundle": str(bundles["b"])}, headers=auth(ADMIN)
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"previous_version": version_a, "bundle_version": version_b}
        seen = len(statuses)
        while len(statuses) < seen + 16:  # load goes on after the switch
            await asyncio.sleep(0.01)
        r = await client.post(
            "/admin/reload", json={"bundle": str(bundles["a"])}, headers=auth(ADMIN)
        )
        assert r.status_code == 200
        stop.set()
        await asyncio.gather(*writers)
        after = await client.post(
            "/v1/items", json={"items": [{"id": "late", "text": "cat"}]}, headers=auth(WRITE)
        )
        assert after.json()["bundle_version"] == version_a
        ready = await client.get("/readyz")
        assert ready.json()["bundle_version"] == version_a
    assert set(statuses) == {200}, statuses
    assert {version_a, version_b} <= set(versions)


async def test_a_failed_reload_keeps_the_old_bundle(make_settings: Any, tmp_path: Path) -> None:
    async with running(make_settings()) as (_, client):
        before = (await client.get("/readyz")).json()["bundle_version"]
        r = await client.post("/admin/reload", json={"bundle": str(tmp_path / "nothing")})
        assert r.status_code == 409
        assert r.json()["error"]["kind"] == "reload_failed"
        assert "nothing" in r.json()["error"]["message"]
        assert (await client.get("/readyz")).json()["bundle_version"] == before
        r = await client.post("/v1/items", json={"items": [{"id": "x", "text": "cat"}]})
        assert r.json()["bundle_version"] == before


async def test_reload_latest(make_settings: Any, bundles: dict[str, Path]) -> None:
    """`latest` (the default body) takes the newest version under `artifacts`."""
    root = bundles["b"].parent
    async with running(make_settings(artifacts=root)) as (_, client):
        r = await client.post("/admin/reload")
        assert r.status_code == 200, r.text
        assert r.json()["bundle_version"] == bundles["b"].name
