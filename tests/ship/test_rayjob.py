"""The catalog backfill as a KubeRay RayJob (helm/qarm/templates/rayjob.yaml): off by default;
when on, one RayJob per bundle version whose entrypoint is the backfill CLI and whose Ray pods
are valid Kubernetes pod templates, locked down like the service's, that see the same bundle
volume, settings and Redis Secret as the Deployment, and that no selector of the service's
picks up. KubeRay's own CRD has no offline schema: its pod templates are checked as
Kubernetes `PodTemplate`s, its own fields one by one."""

from __future__ import annotations

import shlex
from typing import Any

import kubernetes_validate
import pytest

from tests.ship.conftest import CHART, Manifest, RenderError, ci_values, one, render
from tests.ship.test_chart import K8S_VERSION

VERSION = "20261125T120000Z-0123abcd"  # ci/backfill-values.yaml's bundle.version
ROLES = ("head", "worker", "submitter")


def backfill(bundle: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """ci/backfill-values.yaml, with `overrides` over its `backfill:` and `bundle` over its
    `bundle:`."""
    values = ci_values("backfill")
    values["backfill"] = {**values["backfill"], **overrides}
    values["bundle"] = {**values["bundle"], **(bundle or {})}
    return values


def rayjob(values: dict[str, Any]) -> Manifest:
    return one(render(values), "RayJob")


def pod_templates(job: Manifest) -> dict[str, dict[str, Any]]:
    """The pod templates of the head, the (one) worker group and the job submitter."""
    cluster = job["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    return {
        "head": cluster["headGroupSpec"]["template"],
        "worker": workers["template"],
        "submitter": job["spec"]["submitterPodTemplate"],
    }


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    """KubeRay runs Ray in a pod's first container."""
    container: dict[str, Any] = template["spec"]["containers"][0]
    return container


def steps(job: Manifest) -> list[list[str]]:
    """The entrypoint's commands (joined by &&), each as the words the shell passes on."""
    commands: list[list[str]] = [[]]
    for word in shlex.split(job["spec"]["entrypoint"]):
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def options(words: list[str]) -> dict[str, list[str]]:
    """`--name value` pairs of a command line, each name with its values in order."""
    found: dict[str, list[str]] = {}
    for name, value in zip(words[::2], words[1::2], strict=True):
        assert name.startswith("--"), words
        found.setdefault(name, []).append(value)
    return found


def test_no_rayjob_by_default() -> None:
    assert not [m for m in render({}) if m["kind"] == "RayJob"]


def test_rayjob_runs_the_backfill_cli_on_the_head() -> None:
    values = ci_values("backfill")
    job = rayjob(values)
    assert job["apiVersion"] == "ray.io/v1"
    assert VERSION.lower() in job["metadata"]["name"]  # one RayJob per version
    assert len(job["metadata"]["name"]) <= 47  # KubeRay refuses longer RayJob names
    assert f"python -m backfill run --bundle /bundles/{VERSION} " in job["spec"]["entrypoint"]
    run, activate = steps(job)
    assert run[:4] == ["python", "-m", "backfill", "run"]
    flags = options(run[4:])
    assert flags == {
        "--bundle": [f"/bundles/{VERSION}"],
        "--catalog": values["backfill"]["catalogs"],
        "--address": ["auto"],  # the entrypoint runs on the Ray head
        "--actors": ["8"],
        "--batch-size": ["256"],
        "--gpus-per-actor": ["0"],
        "--wait-pods-s": ["600"],
    }
    assert activate == ["python", "-m", "backfill", "activate", VERSION]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] >= 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the submitter reaches it
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["groupName"]
    assert "rayStartParams" in workers
    assert workers["minReplicas"] <= workers["replicas"] == 3 <= workers["maxReplicas"]
    for template in (head["template"], workers["template"]):
        assert "command" not in ray_container(template)  # KubeRay writes `ray start`
        assert "args" not in ray_container(template)


def test_activate_is_a_second_step_only_when_asked() -> None:
    (run,) = steps(rayjob(backfill(activate=False)))
    assert "activate" not in run


def test_version_is_the_bundles_unless_set_and_never_latest() -> None:
    other = "20261201T000000Z-89abcdef"
    (run,) = steps(rayjob(backfill(version=other, activate=False)))
    assert options(run[4:])["--bundle"] == [f"/bundles/{other}"]
    with pytest.raises(RenderError, match="latest"):
        render(backfill(bundle={"version": "latest"}))
    job = rayjob(backfill(bundle={"version": "latest"}, version=other))
    assert other.lower() in job["metadata"]["name"]


def test_catalog_paths_reach_the_cli_as_given() -> None:
    """Shell-quoted where they need it: spaces and quotes arrive as one word each."""
    catalogs = ["/data/catalog export/items.parquet", "s3://exports/it's.parquet", "plain.parquet"]
    (run,) = steps(rayjob(backfill(catalogs=catalogs, activate=False)))
    assert options(run[4:])["--catalog"] == catalogs


@pytest.mark.parametrize("k8s_version", [K8S_VERSION, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("source", ["pvc", "initContainer", "gpu"])
def test_pod_templates_are_valid_kubernetes(source: str, k8s_version: str) -> None:
    values = {
        "pvc": backfill(),
        "initContainer": backfill(bundle=ci_values("initcontainer")["bundle"]),
        "gpu": backfill(gpusPerActor=1, actors=3),
    }[source]
    job = rayjob(values)
    for role, template in pod_templates(job).items():
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{job['metadata']['name']}-{role}"},
            "template": template,
        }
        try:  # strict: an unknown field (a typo) is an error, not ignored
            kubernetes_validate.validate(wrapped, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"the {role} pod template is not valid for {k8s_version}: {err.message}")


@pytest.mark.parametrize(
    "bundle",
    [
        {},  # the default: a PVC
        {"pvc": {"claimName": "bundles-ro", "subPath": "qarm"}},
        ci_values("initcontainer")["bundle"],
        {"source": "image"},
    ],
    ids=["pvc", "pvc-subpath", "initContainer", "image"],
)
def test_ray_pods_see_the_deployments_bundle_settings_and_redis_secret(
    bundle: dict[str, Any],
) -> None:
    manifests = render(backfill(bundle=bundle))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (service,) = pod["containers"]
    settings = next(m for m in manifests if m["kind"] == "ConfigMap" and "QARM_HOST" in m["data"])

    def named(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return [item for item in items if item["name"] == name]

    for role in ("head", "worker"):
        ray_pod = pod_templates(one(manifests, "RayJob"))[role]["spec"]
        ray = ray_container({"spec": ray_pod})
        assert named(ray_pod["volumes"], "bundles") == named(pod["volumes"], "bundles")
        assert named(ray["volumeMounts"], "bundles") == named(service["volumeMounts"], "bundles")
        assert ray_pod.get("initContainers") == pod.get("initContainers")
        assert named(ray["env"], "QARM_REDIS_URL") == named(service["env"], "QARM_REDIS_URL")
        assert ray["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]
    if bundle.get("source") != "image":
        (mount,) = named(ray["volumeMounts"], "bundles")
        assert mount["mountPath"] == "/bundles"
        assert mount["readOnly"] is True


def test_ray_pods_are_locked_down_like_the_service() -> None:
    manifests = render(ci_values("backfill"))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    images = set()
    for role, template in pod_templates(one(manifests, "RayJob")).items():
        spec = template["spec"]
        assert spec["securityContext"] == pod["securityContext"], role
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False  # no Ray autoscaler: no API calls
        (container,) = spec["containers"]
        assert container["securityContext"] == pod["containers"][0]["securityContext"], role
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # Ray's session folder (/tmp/ray) and Python's temp files: the one writable path.
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == tmp["name"]]
        assert "emptyDir" in volume
        assert container["resources"]["limits"]["memory"]
        images.add(container["image"])
    assert images == {"qarm:0.1.0-backfill"}  # one image: Ray needs one version everywhere


def test_no_selector_of_the_service_picks_up_a_ray_pod() -> None:
    manifests = render(ci_values("backfill"))
    selectors = [
        one(manifests, "Service")["spec"]["selector"],
        one(manifests, "Deployment")["spec"]["selector"]["matchLabels"],
        one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for role, template in pod_templates(one(manifests, "RayJob")).items():
        labels = template["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "qarm"
        for selector in selectors:
            assert not selector.items() <= labels.items(), (role, selector)


def test_gpus_per_actor_puts_the_workers_on_gpus() -> None:
    values = backfill(gpusPerActor=0.5, actors=6, workers={"replicas": 3, "gpus": 1})
    values["gpu"] = {"enabled": False, "nodeSelector": {"nvidia.com/gpu.present": "true"}}
    job = rayjob(values)
    (run, _) = steps(job)
    assert options(run[4:])["--gpus-per-actor"] == ["0.5"]
    templates = pod_templates(job)
    worker = ray_container(templates["worker"])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["limits"]["cpu"] == "4"  # the workers' own resources stay
    assert {"name": "QARM_EXECUTION_PROVIDER", "value": "cuda"} in worker["env"]
    worker_spec = templates["worker"]["spec"]
    assert worker_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in worker_spec["tolerations"])
    head = ray_container(templates["head"])
    assert "nvidia.com/gpu" not in head["resources"]["limits"]  # the driver needs none
    assert "tolerations" not in templates["head"]["spec"]
    assert worker["image"] == head["image"] == "qarm:0.1.0-backfill-gpu"


def test_cpu_workers_ask_for_no_gpu() -> None:
    for template in pod_templates(rayjob(ci_values("backfill"))).values():
        container = ray_container(template)
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
        assert "QARM_EXECUTION_PROVIDER" not in {e["name"] for e in container.get("env", [])}
        assert "tolerations" not in template["spec"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpusPerActor": 1, "actors": 8}, "do not fit"),  # 8 GPUs asked, 3 workers x 1
        ({"workers": {"replicas": 5, "minReplicas": 1, "maxReplicas": 4}}, "minReplicas"),
    ],
)
def test_render_refuses_a_cluster_that_cannot_run_the_job(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(backfill(**overrides))


@pytest.mark.parametrize(
    "bad",
    [
        {"actors": -1},
        {"actors": 0},
        {"batchSize": "lots"},
        {"gpusPerActor": -0.5},
        {"catalogs": []},  # enabled, with nothing to encode
        {"catalogs": [""]},
        {"version": "../etc"},
        {"retries": 3},  # no such key
        {"workers": {"replicas": 2, "minReplicas": 1, "maxReplicas": 4, "replica": 2}},
        {"tmpSizeLimit": "lots"},
        {"shutdownAfterJobFinishes": False},  # KubeRay: a TTL needs the shutdown
        {"activeDeadlineSeconds": 0},
    ],
)
def test_schema_refuses_bad_backfill_values(bad: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match=r"(?s)schema.*- at '/backfill"):  # refused by the schema
        render(backfill(**bad))


def test_helm_lint_is_clean_with_the_backfill() -> None:
    import helm_python

    report = helm_python.lint(CHART, ci_values("backfill"), strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not errors, errors
    assert not report["errors"]


def test_redis_tls_files_reach_the_service_and_every_ray_pod() -> None:
    """A rediss:// Redis with client certificates: the Secret's files are mounted read-only in
    the service's pod and in the Ray head and workers, and the settings point at them."""
    values = backfill()
    values["redis"] = {
        "existingSecret": "qarm-redis",
        "key": "url",
        "tls": {"existingSecret": "redis-client-tls", "clientCertificate": True},
    }
    manifests = render(values)
    service_pod = one(manifests, "Deployment")["spec"]["template"]
    templates = pod_templates(one(manifests, "RayJob"))
    for template in (service_pod, templates["head"], templates["worker"]):
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["redis-tls"]["secret"]["secretName"] == "redis-client-tls"
        c = spec["containers"][0]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["redis-tls"] == {
            "name": "redis-tls", "mountPath": "/etc/qarm/redis-tls", "readOnly": True,
        }  # fmt: skip
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["QARM_REDIS_CA_FILE"] == "/etc/qarm/redis-tls/ca.crt"
        assert env["QARM_REDIS_CERT_FILE"] == "/etc/qarm/redis-tls/tls.crt"
        assert env["QARM_REDIS_KEY_FILE"] == "/etc/qarm/redis-tls/tls.key"
