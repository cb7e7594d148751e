"""Activation checks coverage before it switches readers; rollback; retirement; the pods."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from backfill.__main__ import main
from backfill.coverage import report_problems
from backfill.errors import CoverageError, Exit, VersionError
from backfill.lifecycle import activate
from backfill.pods import serves, wait_for_pods, writes_to
from backfill.report import Report, RowFailure
from runtime import Engine, RawItem
from store import NewCodes, PodInfo, SqliteStore, Store
from store.redis_store import Keys
from tests.backfill.conftest import MakeSettings, backfill, store_env

pytestmark = pytest.mark.anyio


def catalog_codes(engine: Engine, row: int) -> NewCodes:
    """A catalog row's codes as the backfill writes them (keeping the build suffix)."""
    encoded, suffixes = engine.catalog_rows(row, row + 1)
    rq = tuple(encoded.rq[0].tolist())
    item_id = str(engine.bundle.item_ids[row])
    return NewCodes(item_id, tuple(encoded.vq[0].tolist()), rq, catalog=(rq, int(suffixes[0])))


def upload(engine: Engine, item_id: str) -> NewCodes:
    """What a service pod writes for a posted text."""
    encoded = engine.encode([engine.prepare(RawItem(item_id, text="red cat song"))])
    return NewCodes(item_id, tuple(encoded.vq[0].tolist()), tuple(encoded.rq[0].tolist()))


@pytest.mark.usefixtures("ray_address")
@pytest.mark.parametrize("store_kind", ["redis"])
async def test_activation_checks_coverage_switches_rolls_back_and_retires(
    store: Store,
    make_settings: MakeSettings,
    bundles: dict[str, Path],
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(sample=10_000)  # every stored value is computed again
    for name, value in store_env(settings).items():
        monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(redis_url)
    a, b = Engine.load(bundles["a"]), Engine.load(bundles["b"])
    await backfill(store, settings, bundles["a"])
    assert (await activate(store, settings, a.version)).previous is None

    # An upload that reached the active version only (a pod that did not follow).
    await store.write(a.version, [upload(a, "posted-1")])
    await backfill(store, settings, bundles["b"])
    with pytest.raises(CoverageError) as refused:
        await activate(store, settings, b.version)
    assert refused.value.problems == [
        f"1 of 601 items with codes under the active version {a.version} have none under "
        f"{b.version} (written to the active version only, e.g. by a pod that did not "
        "follow); post them again: posted-1"
    ]
    assert await asyncio.to_thread(main, ["activate", b.version]) == Exit.REFUSED

    # Posted again (to b as well), but a catalog item lost and another one's codes wrong.
    await store.write(b.version, [upload(b, "posted-1")])
    client.hdel(Keys(redis_prefix).items(b.version, "item-0000007"), "item-0000007")
    good = catalog_codes(b, 3)
    await store.write(b.version, [NewCodes(good.item_id, good.vq[::-1], good.rq)])
    with pytest.raises(CoverageError) as refused:
        await activate(store, settings, b.version)
    missing, lost, differ = refused.value.problems
    assert missing.startswith("1 of 600 items of the bundle's catalog have no codes")
    assert missing.endswith(": item-0000007")
    assert lost.startswith("1 of 601 items with codes under the active version")
    assert lost.endswith(": item-0000007")
    assert differ.startswith("1 of 599 sampled items have stored codes that differ")
    assert "item-0000003 (vq " in differ

    await store.write(b.version, [catalog_codes(b, 3), catalog_codes(b, 7)])
    switched = await activate(store, settings, b.version)
    assert switched.previous == a.version
    assert switched.followed is not None
    assert switched.followed.lagging == []
    assert await asyncio.to_thread(main, ["retire", b.version]) == Exit.REFUSED

    # Rollback: a was active before, so it needs no backfill report.
    client.delete(f"{redis_prefix}:{a.version}:report")
    assert (await activate(store, settings, a.version)).previous == b.version
    assert await asyncio.to_thread(main, ["retire", b.version]) == Exit.OK
    assert list(client.scan_iter(match=f"{redis_prefix}:{b.version}:*")) == []
    lifecycle = await store.lifecycle()
    assert (lifecycle.active, lifecycle.versions[b.version].state) == (a.version, "retired")
    with pytest.raises(VersionError, match="retired"):
        await activate(store, settings, b.version)
    with pytest.raises(VersionError, match="retired"):
        await backfill(store, settings, bundles["b"])

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["status"]) == Exit.OK
    shown = capsys.readouterr().out
    assert f"active version: {a.version}" in shown
    assert f"{b.version}  retired" in shown


def report(**fields: object) -> Report:
    base: dict[str, object] = {
        "version": "v",
        "bundle": "/b",
        "sources": [],
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "finished": True,
    }
    return Report.model_validate(base | fields)


def test_a_staged_version_needs_a_finished_report_without_failures() -> None:
    failure = RowFailure(id="x", source="/e.parquet", field="image", message="not a JPEG")
    failed = report(failed=1, failures=[failure])
    assert report_problems("staged", report(), allow_failures=False) == []
    assert "no backfill report" in report_problems("staged", None, allow_failures=False)[0]
    [unfinished] = report_problems("staged", report(finished=False), allow_failures=False)
    assert "did not finish" in unfinished
    [failures] = report_problems("staged", failed, allow_failures=False)
    assert "1 rows failed in its backfill: x (image)" in failures
    assert report_problems("staged", failed, allow_failures=True) == []
    # A rollback: the version was active before.
    assert report_problems("inactive", None, allow_failures=False) == []


async def test_waiting_for_pods_to_follow(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    try:
        assert (await wait_for_pods(store, writes_to("v2"), timeout_s=5)).pods == 0
        await store.heartbeat(PodInfo("pod-1", "v1", ("v2",), time.time()), ttl_s=60)
        await store.heartbeat(PodInfo("pod-2", "v1", (), time.time()), ttl_s=60)
        lagging = await wait_for_pods(store, writes_to("v2"), timeout_s=0.2)
        assert (lagging.pods, lagging.lagging) == (2, ["pod-2"])
        await store.heartbeat(PodInfo("pod-2", "v2", ("v1",), time.time()), ttl_s=60)
        followed = await wait_for_pods(store, writes_to("v2"), timeout_s=5)
        assert followed.lagging == []
        assert (await wait_for_pods(store, serves("v2"), timeout_s=0.2)).lagging == ["pod-1"]
    finally:
        await store.close()
