"""A backfill run on Ray Data: every item's codes under the version, catalog suffixes kept,
bad rows named and skipped; both stores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.__main__ import main
from backfill.errors import Exit, VersionError
from backfill.source import read_items
from runtime import Engine
from store import Store
from tests.backfill.conftest import MakeSettings, backfill, new_items_table, store_env

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("ray_address")]


async def test_catalog_and_export_get_codes_under_a_staged_version(
    store: Store, make_settings: MakeSettings, bundles: dict[str, Path], new_items: Path
) -> None:
    report = await backfill(store, make_settings(), bundles["a"], [new_items])
    engine = Engine.load(bundles["a"])
    version = engine.version
    catalog_ids = engine.bundle.item_ids.tolist()
    new_ids = pq.read_table(new_items, columns=["id"]).column("id").to_pylist()

    assert (report.finished, report.failed, report.skipped) == (True, 0, 0)
    assert report.items == report.written == len(catalog_ids) + len(new_ids)
    assert report.sources == [str(new_items.resolve())]

    # The bundle's catalog: exactly the bundle's codes, with the build's suffixes.
    stored = await store.get_many(version, catalog_ids)
    encoded, suffixes = engine.catalog_rows(0, len(catalog_ids))
    for row, value in enumerate(stored):
        assert value is not None
        assert value.rq == tuple(engine.bundle.rq_codes[row].tolist())
        assert value.suffix == int(suffixes[row])
        assert value.vq == tuple(encoded.vq[row].tolist())

    # The export: what the engine gives each item.
    items = read_items(str(new_items), new_ids)
    codes = engine.encode([engine.prepare(item) for item in items])
    stored = await store.get_many(version, [item.id for item in items])
    for value, vq, rq in zip(stored, codes.vq.tolist(), codes.rq.tolist(), strict=True):
        assert value is not None
        assert (value.vq, value.rq) == (tuple(vq), tuple(rq))

    lifecycle = await store.lifecycle()
    assert lifecycle.active is None
    assert lifecycle.versions[version].state == "staged"
    saved = json.loads(await store.report(version) or "{}")
    assert saved["finished"] is True
    assert saved["written"] == report.written


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_bad_rows_are_named_and_skipped_and_fail_the_exit_status(
    store: Store,
    make_settings: MakeSettings,
    bundles: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = new_items_table(20, 20)
    bad = pa.table(
        {
            "id": ["bad-image", "bad-width", "bad id!", "no-content"],
            "text": pa.array([None, None, "red cat", None], pa.string()),
            "image": pa.array([b"not an image", None, None, None], pa.binary()),
            "embedding": pa.array([None, [0.5, 0.5, 0.5], None, None], pa.list_(pa.float32())),
        }
    )
    good = good.append_column("image", pa.array([None] * len(good), pa.binary()))
    export = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables([good.select(bad.column_names), bad]), export)
    settings = make_settings()
    for name, value in store_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QARM_ACTORS", "1")

    args = ["run", "--bundle", str(bundles["a"]), "--catalog", str(export)]
    status = await asyncio.to_thread(main, args)

    assert status == Exit.ROWS_FAILED
    version = Engine.load(bundles["a"]).version
    report = json.loads(await store.report(version) or "{}")
    failed = {f["id"]: f["field"] for f in report["failures"]}
    assert failed == {
        "bad-image": "image",
        "bad-width": "embedding",
        "bad id!": "id",
        "no-content": "item",
    }
    assert all(f["source"] == str(export.resolve()) for f in report["failures"])
    assert report["failed"] == 4
    assert report["finished"] is True
    good_ids = good.column("id").to_pylist()
    assert None not in await store.get_many(version, good_ids)
    assert await store.get_many(version, ["bad-image", "bad-width", "no-content"]) == [None] * 3


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_the_active_version_is_not_backfilled(
    store: Store, make_settings: MakeSettings, bundles: dict[str, Path]
) -> None:
    engine = Engine.load(bundles["a"])
    await store.promote(engine.version, str(bundles["a"]))
    with pytest.raises(VersionError, match="active"):
        await backfill(store, make_settings(), bundles["a"])
