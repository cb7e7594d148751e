"""`python -m service` as a real process: it serves, and SIGTERM drains every accepted write."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.launch import free_port
from tests.service.conftest import metric_value, wait_ready

pytestmark = pytest.mark.anyio


async def test_sigterm_drains_accepted_requests(bundles: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "QARM_SQLITE_PATH": str(tmp_path / "store.sqlite3"),
        # a batch closes when 16 items are in, or after 5 s: SIGTERM lands while all wait
        "QARM_MAX_BATCH": "64",
        "QARM_MAX_WAIT_MS": "5000",
        "QARM_BATCH_WAIT": "always",
    }
    env.pop("QARM_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--bundle", str(bundles["a"])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await wait_ready(client, proc)
            posts = [
                asyncio.create_task(
                    client.post("/v1/items", json={"items": [{"id": f"d{i}", "text": "cat"}]})
                )
                for i in range(16)
            ]
            while True:  # until all 16 are queued in the batcher
                text = (await client.get("/metrics")).text
                if metric_value(text, "qarm_queue_depth_items") == 16:
                    break
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*posts)
        assert [a.status_code for a in answers] == [200] * 16
        # uvicorn re-raises the signal once it has shut down cleanly
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output = ""
        if proc.stdout is not None:
            output = proc.stdout.read().decode()
            proc.stdout.close()
    assert '"batcher drained"' in output
    assert "NO AUTH" in output


@pytest.mark.parametrize("which", ["a", "plain"])
def test_demo_posts_samples_and_prints_codes(
    bundles: dict[str, Path], tmp_path: Path, which: str
) -> None:
    """`make demo`'s client, on a bundle with an encoder and on one without."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QARM_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.demo",
            "--bundle",
            str(bundles[which]),
            "--store",
            str(tmp_path / "demo.sqlite3"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "items encoded under bundle" in out.stdout
    posted = 3 if which == "a" else 4  # text, image, audio samples; or 4 embeddings
    assert f"batchGet of {posted + 1} ids: {posted} found" in out.stdout
    assert "GET /v1/sids/" in out.stdout
