"""Fixtures every room's tests share: the real Redis that `make test` provides."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("QARM_TEST_REDIS_URL")
    if not url:
        pytest.fail("QARM_TEST_REDIS_URL is not set: run the tests with `make test`")
    return url
