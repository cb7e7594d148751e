"""The chart renders with a real Helm engine, every manifest is valid against the Kubernetes
schemas, and the Deployment is what docs/operations.md promises."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from pydantic import SecretStr

from service.settings import Settings
from tests.ship.conftest import (
    CHART,
    NAMESPACE,
    Manifest,
    RenderError,
    ci_values,
    dashboard,
    one,
    render,
)

K8S_VERSION = "1.30.0"  # the oldest Kubernetes the chart supports; newer schemas also pass
# Prometheus operator and KubeRay kinds: no schema ships offline (test_rayjob.py checks the
# RayJob's pod templates against Kubernetes' own PodTemplateSpec instead)
CRD_GROUPS = ("monitoring.coreos.com/", "ray.io/")
CI_VALUES = ["default", "gpu", "initcontainer", "backfill"]


@pytest.fixture(scope="module", params=CI_VALUES)
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    values: dict[str, Any] = {} if request.param == "default" else ci_values(request.param)
    return render(values)


def test_renders_every_kind(manifests: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    for kind in (
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ):
        assert kind in kinds
    assert kinds.count("ConfigMap") == 2  # settings and the dashboard


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_manifests_valid_against_kubernetes_schemas(
    manifests: list[Manifest], version: str
) -> None:
    checked = 0
    for manifest in manifests:
        if manifest["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:  # strict: an unknown field (a typo) is an error, not ignored
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            pytest.fail(f"{name} is not valid for Kubernetes {version}: {err.message}")
        checked += 1
    assert checked >= 6


def test_operator_kinds_have_their_required_fields(manifests: list[Manifest]) -> None:
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    rule = one(manifests, "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"], "no alert rules"


def container(manifests: list[Manifest]) -> dict[str, Any]:
    (c,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_probes_security_and_bundle(manifests: list[Manifest]) -> None:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    c = container(manifests)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # time to load a bundle
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/bundles"]["readOnly"] is True
    assert "/tmp" in mounts  # the one writable path
    assert "command" not in c  # the image's entrypoint: `python -m service`, one uvicorn worker
    assert "args" not in c
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert "QARM_REDIS_URL" in secrets


def test_gpu_values_ask_for_a_gpu_and_the_gpu_image() -> None:
    gpu = container(render(ci_values("gpu")))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"].endswith("-gpu")
    cpu = container(render({}))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert not cpu["image"].endswith("-gpu")


def test_hpa_queue_depth_metric_is_optional() -> None:
    default = one(render({}), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in default] == ["Resource"]
    gpu = one(render(ci_values("gpu")), "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods = [m for m in gpu if m["type"] == "Pods"]
    assert pods[0]["pods"]["metric"]["name"] == "qarm_queue_depth_items"


def test_init_container_copies_the_bundle_and_tokens_come_from_a_secret() -> None:
    manifests = render(ci_values("initcontainer"))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["volumeMounts"][0]["name"] == "bundles"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["bundles"]
    env = {e["name"]: e for e in container(manifests)["env"]}
    assert env["QARM_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "qarm-tokens"


@pytest.mark.parametrize("name", CI_VALUES)
def test_configmap_is_accepted_by_the_service_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered QARM_* variables are settings the service knows, with valid values."""
    values: dict[str, Any] = {} if name == "default" else ci_values(name)
    settings_map = next(
        m for m in render(values) if m["kind"] == "ConfigMap" and "QARM_HOST" in m["data"]
    )
    for key, value in settings_map["data"].items():
        assert key.startswith("QARM_")
        field = key.removeprefix("QARM_").lower()
        assert field in Settings.model_fields, f"{key} is no setting of service/settings.py"
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QARM_REDIS_URL", "redis://redis.example:6379/0")  # from the Secret
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.max_queue == int(settings_map["data"]["QARM_MAX_QUEUE"])
    assert isinstance(settings.redis_url, SecretStr)


@pytest.mark.parametrize(
    "bad",
    [
        {"settings": {"max_queue": 0}},
        {"settings": {"max_batch": "lots"}},
        {"settings": {"no_such_setting": 1}},
        {"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False}},
        {"bundle": {"source": "initContainer"}},  # no image to copy from
        {"bundle": {"source": "nfs"}},
        {"bundle": {"version": "../etc"}},
        {"redis": {"existingSecret": ""}},
        {"replicasCount": 3},  # a typo of replicaCount
    ],
)
def test_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match=r"schema|additional|want|value must|allOf|enum"):
        render(bad)


def test_dashboard_is_grafana_json_with_every_panel_on_prometheus() -> None:
    board = dashboard(render({}))
    assert board["uid"] == "qarm-service"
    titles = {p["title"] for p in board["panels"]}
    for want in ("Request rate by route", "Batch size (items)", "Queue wait", "Store errors by op"):
        assert want in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_release_namespace_is_used_by_the_alerts() -> None:
    rules = one(render({}), "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert all(f'namespace="{NAMESPACE}"' in r["expr"] for r in rules)


def test_helm_lint_is_clean() -> None:
    """`helm lint --strict` (Helm v4's linter through helm-python-sdk) finds no error."""
    import helm_python

    report = helm_python.lint(CHART, strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not errors, errors
    assert not report["errors"]
