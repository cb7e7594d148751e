"""Small catalogs and one small bundle, shared by the codebooks tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codebooks.build import BuildConfig, build
from codebooks.bundle import Bundle, load_bundle
from codebooks.clustered import SyntheticEmbeddings, clustered_embeddings


@pytest.fixture(scope="session")
def embedded() -> SyntheticEmbeddings:
    return clustered_embeddings(3000, 16, groups=12, subgroups=4, seed=1)


@pytest.fixture(scope="session")
def config() -> BuildConfig:
    return BuildConfig(k=5, levels=4, centroids=16, niter=10, train_items=2000, gpu="off")


@pytest.fixture(scope="session")
def bundle_path(
    tmp_path_factory: pytest.TempPathFactory, embedded: SyntheticEmbeddings, config: BuildConfig
) -> Path:
    return build(embedded.ids, embedded.embeddings, config, tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def bundle(bundle_path: Path) -> Bundle:
    return load_bundle(bundle_path)


@pytest.fixture
def writable_bundle(tmp_path: Path, bundle_path: Path) -> Path:
    """A copy of the bundle whose files a test may tamper with."""
    copy = Path(shutil.copytree(bundle_path, tmp_path / bundle_path.name))
    for file in copy.iterdir():
        file.chmod(0o644)
    return copy
