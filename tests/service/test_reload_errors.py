"""A reload that fails: the client learns which bundle failed, not the server's files; the
log has one WARNING line with the detail, no traceback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_reload_of_a_missing_bundle(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(make_settings()) as (_, client):
        with caplog.at_level(logging.INFO):
            r = await client.post("/admin/reload", json={"bundle": "no-such-bundle"})
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["kind"] == "reload_failed"
    assert "no-such-bundle" in error["message"]
    assert str(Path("no-such-bundle").resolve()) not in error["message"]
    assert "manifest.json" not in error["message"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
    failed = [rec for rec in caplog.records if "reload of" in rec.getMessage()]
    assert [rec.levelno for rec in failed] == [logging.WARNING]
