"""Fixtures for the backfill tests: one local Ray for the session, tiny bundles with the tiny
encoder (as the service tests build them), a Parquet export of new items, settings per store."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from backfill.job import plan, run_backfill
from backfill.report import Report
from backfill.settings import BackfillSettings
from loadtest.tiny_encoder import WORDS
from store import Store, open_store
from tests.service.conftest import DIM, make_bundle

MakeSettings = Callable[..., BackfillSettings]


@pytest.fixture(scope="package")
def ray_address() -> Iterator[str]:
    """A local Ray of 2 CPUs for every test here that runs a backfill, stopped after the
    last of them; its address lets a `python -m backfill` subprocess join it instead of
    starting its own."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bundles of the same 600 catalog ids (`a`, `b`: another seed), tiny encoders."""
    root = tmp_path_factory.mktemp("artifacts")
    work = tmp_path_factory.mktemp("encoder")
    return {
        name: make_bundle(root / name, work / name, seed=seed)
        for name, seed in [("a", 1), ("b", 2)]
    }


def new_items_table(n_text: int, n_embedding: int, seed: int = 0) -> pa.Table:
    """Items that are not in any bundle: `text-*` rows of the tiny encoder's words, then
    `emb-*` rows with a unit embedding of the bundles' width."""
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=(n_text, 3))
    vectors = rng.standard_normal((n_embedding, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"text-{i}" for i in range(n_text)] + [f"emb-{i}" for i in range(n_embedding)]
    text = [" ".join(w) for w in words] + [None] * n_embedding
    embedding = [None] * n_text + vectors.tolist()
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(text, pa.string()),
            "embedding": pa.array(embedding, pa.list_(pa.float32())),
        }
    )


@pytest.fixture(scope="session")
def new_items(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet export of 200 new items (100 texts, 100 embeddings), row groups of 50."""
    path = tmp_path_factory.mktemp("exports") / "new-items.parquet"
    pq.write_table(new_items_table(100, 100), path, row_group_size=50)
    return path


@pytest.fixture
def make_settings(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> MakeSettings:
    """Settings for this test's store (its own SQLite file or Redis prefix); keyword
    arguments override any setting."""

    def make(**overrides: Any) -> BackfillSettings:
        fields: dict[str, Any] = {
            "sqlite_path": tmp_path / "store.sqlite3",
            "actors": 1,
            "batch_size": 64,
            "write_batch": 100,
            "wait_pods_s": 1.0,
        }
        if store_kind == "redis":
            fields["redis_url"] = request.getfixturevalue("redis_url")
            fields["redis_prefix"] = request.getfixturevalue("redis_prefix")
        fields.update(overrides)
        return BackfillSettings(**fields)

    return make


@pytest.fixture
async def store(make_settings: MakeSettings) -> AsyncIterator[Store]:
    s = open_store(make_settings())
    yield s
    await s.close()


async def backfill(
    store: Store, settings: BackfillSettings, bundle: Path, catalogs: list[Path] | None = None
) -> Report:
    """One run in this process, on the session's Ray."""
    work = plan(bundle, [str(c) for c in catalogs or []])
    return await run_backfill(store, settings, work)


def store_env(settings: BackfillSettings) -> dict[str, str]:
    """The QARM_* variables that point `python -m backfill` at the settings' store."""
    env = {
        "QARM_SQLITE_PATH": str(settings.sqlite_path),
        "QARM_REDIS_PREFIX": settings.redis_prefix,
        "QARM_RETIRE_GRACE_S": "0",
    }
    if settings.redis_url is not None:
        env["QARM_REDIS_URL"] = settings.redis_url.get_secret_value()
    return env
