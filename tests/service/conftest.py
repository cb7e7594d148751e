"""Fixtures for the service tests: tiny bundles with the tiny encoder, settings per store,
a running app (lifespan + httpx), media helpers, and a real Redis (QARM_TEST_REDIS_URL)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from codebooks.build import BuildConfig, build
from codebooks.clustered import clustered_embeddings
from loadtest.tiny_encoder import (
    build_encoder,
    build_features_encoder,
    build_tokenizer,
    encoder_spec,
    features_spec,
)
from service.app import create_app
from service.launch import free_port, until_ready
from service.settings import Settings

DIM = 16
READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
ADMIN = "admin-token-0123456789"


def make_bundle(
    root: Path, work: Path, *, seed: int, with_encoder: bool = True, features: bool = False
) -> Path:
    catalog = clustered_embeddings(600, DIM, groups=6, subgroups=3, seed=seed)
    config = BuildConfig(k=5, levels=3, centroids=8, niter=5, train_items=600, seed=seed, gpu="off")
    if not with_encoder:
        return build(catalog.ids, catalog.embeddings, config, root)
    work.mkdir(parents=True, exist_ok=True)
    if features:
        encoder = {"encoder.onnx": build_features_encoder(work / "encoder.onnx", DIM, seed=seed)}
        return build(
            catalog.ids,
            catalog.embeddings,
            config,
            root,
            extra_files=encoder,
            encoder=features_spec(),
        )
    extra = {
        "encoder.onnx": build_encoder(work / "encoder.onnx", DIM, seed=seed),
        "tokenizer.json": build_tokenizer(work / "tokenizer.json"),
    }
    return build(
        catalog.ids, catalog.embeddings, config, root, extra_files=extra, encoder=encoder_spec()
    )


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bundles with multimodal encoders (`a`, `b`: another seed), one without (`plain`),
    one with a features encoder (`features`)."""
    root = tmp_path_factory.mktemp("artifacts")
    work = tmp_path_factory.mktemp("encoder")
    return {
        "a": make_bundle(root / "a", work / "a", seed=1),
        "b": make_bundle(root / "b", work / "b", seed=2),
        "plain": make_bundle(root / "plain", work / "plain", seed=3, with_encoder=False),
        "features": make_bundle(root / "features", work / "features", seed=4, features=True),
    }


@pytest.fixture
def make_settings(
    store_kind: str, bundles: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Any:
    """Settings for this test's store; keyword arguments override any setting."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            "bundle": str(bundles["a"]),
            "sqlite_path": tmp_path / "store.sqlite3",
            "max_wait_ms": 2.0,
        }
        if store_kind == "redis":
            fields["redis_url"] = request.getfixturevalue("redis_url")
            fields["redis_prefix"] = request.getfixturevalue("redis_prefix")
        if store_kind == "cluster":
            fields["redis_url"] = request.getfixturevalue("redis_cluster_url")
            fields["redis_prefix"] = request.getfixturevalue("redis_cluster_prefix")
            fields["redis_cluster"] = True
        fields.update(overrides)
        return Settings(**fields)

    return make


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run, and an httpx client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://qarm") as client:
            yield app, client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png_b64(
    seed: int, size: tuple[int, int] = (40, 30), fmt: str = "PNG", *, flat: bool = False
) -> str:
    """A random (or, `flat`, one-colour: it compresses to almost nothing) image, base64."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    if flat:
        pixels[:] = pixels[0, 0]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def wav_b64(seed: int, seconds: float = 0.1, rate: int = 16000, channels: int = 1) -> str:
    rng = np.random.default_rng(seed)
    samples = (rng.standard_normal((int(seconds * rate), channels)) * 8000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample_labels = key[key.index("{") + 1 : -1] if "{" in key else ""
        sample_name = key.split("{")[0]
        if sample_name == name and all(p in sample_labels.split(",") for p in want.split(",") if p):
            return float(value)
    return 0.0


@contextmanager
def service_process(
    env: dict[str, str], bundle: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m service` on a free port with `env` (on top of this process's), killed on
    exit; yields the process and its base URL (not yet ready: see `wait_ready`)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--bundle", str(bundle)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    await until_ready(client, proc, timeout_s=60)  # start-up: imports, bundle, warm-up
