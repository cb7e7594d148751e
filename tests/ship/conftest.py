"""Shared helpers of the shipping tests: render the chart with a real Helm engine, read the
alert rules and the dashboard out of it, and find the tools the checks need."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "qarm"
RELEASE = "qarm"
NAMESPACE = "recs"

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every manifest the chart renders with `values` (over values.yaml), as parsed YAML.

    A `helm` binary on PATH renders when present (`helm template`); otherwise Helm v4's own
    engine through helm-python-sdk (libhelm_c). Both validate values.schema.json first.
    """
    helm = shutil.which("helm")
    if helm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            values_file = Path(tmp) / "values.json"  # JSON is YAML
            values_file.write_text(json.dumps(values or {}))
            proc = subprocess.run(
                [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                 "--values", str(values_file)],
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            raise RenderError(proc.stderr)
        texts = [proc.stdout]
    else:
        import helm_python

        with helm_python.Chart.load(CHART) as chart:
            try:
                rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
            except helm_python.HelmError as err:
                raise RenderError(str(err)) from err
        texts = [text for name, text in sorted(rendered.items()) if name.endswith(".yaml")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


class RenderError(Exception):
    """The chart refused the values (schema) or a template failed."""


def ci_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def alert_rules(manifests: list[Manifest]) -> dict[str, Any]:
    """The PrometheusRule's spec: a Prometheus rule file ({"groups": [...]})."""
    spec: dict[str, Any] = one(manifests, "PrometheusRule")["spec"]
    return spec


def dashboard(manifests: list[Manifest]) -> dict[str, Any]:
    configmaps = [m for m in manifests if m["kind"] == "ConfigMap" and "qarm.json" in m["data"]]
    assert len(configmaps) == 1, "the dashboard ConfigMap is missing"
    board: dict[str, Any] = json.loads(configmaps[0]["data"]["qarm.json"])
    return board


def dashboard_exprs(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            yield var["query"]


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (Debian/Ubuntu: "
            "apt-get install prometheus; elsewhere: the prometheus release archive)"
        )
    return path
