"""A backfill killed mid-way resumes: what it wrote is skipped and keeps its suffixes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import Engine
from store import Store, StoredCodes
from tests.backfill.conftest import MakeSettings, backfill, store_env

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("store_kind", ["redis"])]

REPO = Path(__file__).resolve().parents[2]


async def stored_under(store: Store, version: str) -> dict[str, StoredCodes]:
    ids = [i async for chunk in store.ids(version) for i in chunk]
    values = await store.get_many(version, ids)
    return {v.item_id: v for v in values if v is not None}


async def kill_once_some_are_written(
    process: subprocess.Popen[bytes], store: Store, version: str
) -> None:
    """SIGKILL the run (its whole process group) once it has written a few items."""
    deadline = time.monotonic() + 300  # a guard against a run that never writes, not a timing
    while time.monotonic() < deadline and process.poll() is None:
        if len(await stored_under(store, version)) >= 20:
            break
        await asyncio.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def test_a_killed_run_resumes_without_changing_what_it_wrote(
    store: Store,
    make_settings: MakeSettings,
    bundles: dict[str, Path],
    new_items: Path,
    ray_address: str,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    version = Engine.load(bundles["a"]).version
    command = [
        *(sys.executable, "-m", "backfill", "run", "--bundle", str(bundles["a"])),
        *("--catalog", str(new_items), "--address", ray_address, "--actors", "1"),
        # Slow enough to be caught half-way.
        *("--batch-size", "10", "--write-batch", "10", "--max-writes-per-s", "60"),
    ]
    with (tmp_path / "run.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **store_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        await kill_once_some_are_written(process, store, version)
    first = await stored_under(store, version)
    total = len(Engine.load(bundles["a"]).bundle.item_ids) + 200
    assert 0 < len(first) < total, (tmp_path / "run.log").read_text()[-3000:]
    killed = await store.report(version)
    assert killed is not None
    assert '"finished":false' in killed

    second = await backfill(store, settings, bundles["a"], [new_items])
    assert second.finished
    assert second.items == total
    assert second.skipped == len(first)
    assert second.written == total - second.skipped
    now = await stored_under(store, version)
    assert len(now) == total
    assert {i: now[i] for i in first} == first  # same codes, same suffixes

    third = await backfill(store, settings, bundles["a"], [new_items])
    assert (third.written, third.skipped, third.failed) == (0, total, 0)
    assert await stored_under(store, version) == now
