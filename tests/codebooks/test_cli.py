"""`python -m codebooks` as a person runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codebooks.bundle import RQ_BIAS, RQ_CENTROIDS, RQ_CODES, SID_SUFFIX, latest_bundle

SMALL = ["--k", "5", "--levels", "3", "--centroids", "16", "--niter", "8", "--gpu", "off"]


def _run(*args: str, threads: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    return subprocess.run(
        [sys.executable, "-m", "codebooks", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    assert _run("synth", "--n", "2000", "--dim", "16", "--out", str(out)).returncode == 0
    return out


def test_build_then_inspect(tmp_path: Path, embeddings: Path) -> None:
    built = _run(
        "build",
        "--embeddings",
        str(embeddings / "embeddings.npy"),
        "--ids",
        str(embeddings / "ids.npy"),
        "--out",
        str(tmp_path),
        *SMALL,
    )
    assert built.returncode == 0, built.stderr
    bundle = latest_bundle(tmp_path)
    assert f"wrote {bundle}" in built.stdout
    assert "residual MSE" in built.stdout
    inspected = _run("inspect", str(bundle))
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.startswith(f"ok: {bundle} verified")


def test_inspect_refuses_a_tampered_bundle(tmp_path: Path, embeddings: Path) -> None:
    _run(
        "build",
        "--embeddings",
        str(embeddings / "embeddings.npy"),
        "--ids",
        str(embeddings / "ids.npy"),
        "--out",
        str(tmp_path),
        *SMALL,
    )
    bundle = latest_bundle(tmp_path)
    (bundle / RQ_CODES).chmod(0o644)
    (bundle / RQ_CODES).write_bytes(b"not what was built")
    result = _run("inspect", str(bundle))
    assert result.returncode == 1
    assert f"{RQ_CODES}: " in result.stderr


def test_build_refuses_a_dim_it_was_not_given(tmp_path: Path, embeddings: Path) -> None:
    result = _run(
        "build",
        "--embeddings",
        str(embeddings / "embeddings.npy"),
        "--ids",
        str(embeddings / "ids.npy"),
        "--out",
        str(tmp_path),
        "--dim",
        "64",
        *SMALL,
    )
    assert result.returncode == 1
    assert "embeddings have d=16, --dim says 64" in result.stderr


@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["--balance", "sinkhorn"],
        ["--method", "faiss-rq"],
        ["--method", "faiss-rq", "--balance", "sinkhorn"],
    ],
)
def test_builds_are_byte_identical_across_runs_and_thread_counts(
    tmp_path: Path, embeddings: Path, variant: list[str]
) -> None:
    outputs = []
    for run, threads in enumerate([1, 2, 2]):
        out = tmp_path / str(run)
        result = _run(
            "build",
            "--embeddings",
            str(embeddings / "embeddings.npy"),
            "--ids",
            str(embeddings / "ids.npy"),
            "--out",
            str(out),
            *SMALL,
            *variant,
            threads=threads,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(latest_bundle(out))
        assert _run("inspect", str(outputs[-1])).returncode == 0
    for name in (RQ_CENTROIDS, RQ_BIAS, RQ_CODES, SID_SUFFIX):
        first = np.load(outputs[0] / name)
        for other in outputs[1:]:
            assert np.load(other / name).tobytes() == first.tobytes(), name
