"""Fixtures every room's tests share: the real Redis that `make test` provides, and a small
synthetic catalog with its interaction log."""

from __future__ import annotations

import os

import pytest

from codebooks.catalog import (
    Interactions,
    SyntheticCatalog,
    synthetic_catalog,
    synthetic_interactions,
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("QARM_TEST_REDIS_URL")
    if not url:
        pytest.fail("QARM_TEST_REDIS_URL is not set: run the tests with `make test`")
    return url


@pytest.fixture(scope="session")
def catalog() -> SyntheticCatalog:
    return synthetic_catalog(400, n_groups=8, seed=3)


@pytest.fixture(scope="session")
def events(catalog: SyntheticCatalog) -> Interactions:
    return synthetic_interactions(catalog, 30_000, seed=3)
