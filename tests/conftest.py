"""Fixtures every room's tests share: the real Redis that `make test` provides, and a small
synthetic catalog with its interaction log."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from catalogs.interactions import Interactions
from catalogs.synthetic import SyntheticCatalog, synthetic_catalog, synthetic_interactions
from tests.keys import own_prefix


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("QARM_TEST_REDIS_URL")
    if not url:
        pytest.fail("QARM_TEST_REDIS_URL is not set: run the tests with `make test`")
    return url


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """One node of the 3-master Redis Cluster that `make test` starts."""
    url = os.environ.get("QARM_TEST_REDIS_CLUSTER_URL")
    if not url:
        pytest.fail("QARM_TEST_REDIS_CLUSTER_URL is not set: run the tests with `make test`")
    return url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    with own_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture
def redis_cluster_prefix(redis_cluster_url: str) -> Iterator[str]:
    """A key prefix of this test's own in the Redis Cluster; its keys are deleted afterwards."""
    with own_prefix(redis_cluster_url, cluster=True) as prefix:
        yield prefix


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def catalog() -> SyntheticCatalog:
    return synthetic_catalog(400, n_groups=8, seed=3)


@pytest.fixture(scope="session")
def events(catalog: SyntheticCatalog) -> Interactions:
    return synthetic_interactions(catalog, 30_000, seed=3)
