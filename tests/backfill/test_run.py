"""A backfill run on Ray Data: every item's codes under the version, catalog suffixes kept,
bad rows named and skipped; both stores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.__main__ import main
from backfill.errors import Exit, VersionError
from backfill.source import read_items
from runtime import Engine, RawItem
from runtime.media import png_bytes
from store import CatalogSeed, NewCodes, Store
from tests.backfill.conftest import MakeSettings, backfill, new_items_table, store_env

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("ray_address")]


async def test_catalog_and_export_get_codes_under_a_staged_version(
    store: Store, make_settings: MakeSettings, bundles: dict[str, Path], new_items: Path
) -> None:
    engine = Engine.load(bundles["a"])
    version = engine.version
    # An item a service pod (which loaded the bundle) wrote to the version before the backfill
    # reached it.
    store.attach(version, CatalogSeed.of(engine.bundle))
    encoded = engine.encode([engine.prepare(RawItem("text-0", text="winter dog"))])
    [posted] = await store.write(
        version, [NewCodes("text-0", tuple(encoded.vq[0].tolist()), tuple(encoded.rq[0].tolist()))]
    )

    report = await backfill(store, make_settings(), bundles["a"], [new_items])

    catalog_ids = engine.bundle.item_ids.tolist()
    new_ids = pq.read_table(new_items, columns=["id"]).column("id").to_pylist()
    assert (report.finished, report.failed, report.skipped) == (True, 0, 1)
    assert report.items == len(catalog_ids) + len(new_ids) == report.written + 1
    assert report.sources == [str(new_items.resolve())]
    assert await store.get_many(version, ["text-0"]) == [posted]

    # The bundle's catalog: exactly the bundle's codes, with the build's suffixes.
    stored = await store.get_many(version, catalog_ids)
    encoded, suffixes = engine.catalog_rows(0, len(catalog_ids))
    for row, value in enumerate(stored):
        assert value is not None
        assert value.rq == tuple(engine.bundle.rq_codes[row].tolist())
        assert value.suffix == int(suffixes[row])
        assert value.vq == tuple(encoded.vq[row].tolist())

    # The export: what the engine gives each item.
    items = read_items(str(new_items), new_ids[1:])
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
            "id": ["bad-image", "bad-width", "bad id!", "no-content", "item-0000005"],
            "text": pa.array([None, None, "red cat", None, "blue fish"], pa.string()),
            "image": pa.array([b"not an image", None, None, None, None], pa.binary()),
            "embedding": pa.array(
                [None, [0.5, 0.5, 0.5], None, None, None], pa.list_(pa.float32())
            ),
        }
    )
    good = good.append_column("image", pa.array([None] * len(good), pa.binary()))
    export = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables([good.select(bad.column_names), bad]), export)
    status, version, report = await _run_cli(
        store, make_settings, monkeypatch, bundles["a"], export
    )

    assert status == Exit.ROWS_FAILED
    failed = {f["id"]: f["field"] for f in report["failures"]}
    assert failed == {
        "bad-image": "image",
        "bad-width": "embedding",
        "bad id!": "id",
        "no-content": "item",
    }
    assert all(f["source"] == str(export.resolve()) for f in report["failures"])
    assert (report["failed"], report["skipped"], report["finished"]) == (4, 1, True)
    good_ids = good.column("id").to_pylist()
    assert None not in await store.get_many(version, good_ids)
    assert await store.get_many(version, ["bad-image", "bad-width", "no-content"]) == [None] * 3
    # An export row of a bundle catalog item: the bundle's codes are its codes.
    [catalog_item] = await store.get_many(version, ["item-0000005"])
    assert catalog_item is not None
    assert catalog_item.rq == tuple(Engine.load(bundles["a"]).bundle.rq_codes[5].tolist())


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_the_active_version_is_not_backfilled(
    store: Store, make_settings: MakeSettings, bundles: dict[str, Path]
) -> None:
    engine = Engine.load(bundles["a"])
    await store.promote(engine.version, str(bundles["a"]))
    with pytest.raises(VersionError, match="active"):
        await backfill(store, make_settings(), bundles["a"])


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_media_given_as_paths_are_read_from_the_exports_folder(
    store: Store,
    make_settings: MakeSettings,
    bundles: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The training schema's items file (docs/data.md) is an export as it is: covers named by
    paths relative to the file; a path that does not read fails its row, naming it."""
    (tmp_path / "covers").mkdir()
    (tmp_path / "covers" / "a.png").write_bytes(png_bytes(np.full((3, 8, 8), 0.5, np.float32)))
    export = tmp_path / "items.parquet"
    table = {
        "id": ["cover-a", "cover-gone", "text-only"],
        "text": ["red cat", "blue fish", "green dog"],
        "image": ["covers/a.png", "covers/gone.png", None],
        "kind": ["x", "y", "z"],  # a side column: ignored
    }
    pq.write_table(pa.table(table), export)
    status, version, report = await _run_cli(
        store, make_settings, monkeypatch, bundles["a"], export
    )

    assert status == Exit.ROWS_FAILED
    [failure] = report["failures"]
    assert (failure["id"], failure["field"]) == ("cover-gone", "image")
    assert "covers/gone.png" in failure["message"]
    stored = await store.get_many(version, ["cover-a", "cover-gone", "text-only"])
    assert [codes is not None for codes in stored] == [True, False, True]


async def _run_cli(
    store: Store,
    make_settings: MakeSettings,
    monkeypatch: pytest.MonkeyPatch,
    bundle: Path,
    export: Path,
) -> tuple[int, str, dict[str, Any]]:
    """`python -m backfill run --bundle --catalog` with one actor, as an operator runs it:
    (exit status, the bundle's version, the run's saved report)."""
    for name, value in store_env(make_settings()).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QARM_ACTORS", "1")
    args = ["run", "--bundle", str(bundle), "--catalog", str(export)]
    status = await asyncio.to_thread(main, args)
    version = Engine.load(bundle).version
    return status, version, json.loads(await store.report(version) or "{}")
