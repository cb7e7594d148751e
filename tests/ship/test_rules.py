"""The alert rules the chart ships: `promtool check rules` accepts them, and `promtool test
rules` shows each alert firing on the series that should fire it and staying quiet on a
healthy service."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ship.conftest import alert_rules, render

POD = "qarm-7d9f8c6b5-x2x4z"  # as a Deployment names its pods
SEL = f'job="qarm", namespace="recs", pod="{POD}"'


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{SEL}{', ' if labels else ''}{labels}}}", "values": values}


def requests(status: str, per_min: int) -> dict[str, str]:
    labels = f'route="/v1/items", method="POST", status="{status}"'
    return series("qarm_requests_total", labels, f"0+{per_min}x40")


def latency(
    le: str, per_min: int, route: str = "/v1/items", method: str = "POST"
) -> dict[str, str]:
    labels = f'route="{route}", method="{method}", status="200", le="{le}"'
    return series("qarm_request_duration_seconds_bucket", labels, f"0+{per_min}x40")


HEALTHY = [
    requests("200", 600),
    latency("0.1", 590),
    latency("0.25", 600),
    latency("10", 600),
    latency("+Inf", 600),
    latency("0.01", 3000, "/v1/codes:batchGet", "POST"),
    latency("+Inf", 3000, "/v1/codes:batchGet", "POST"),
    series("qarm_queue_depth_items", "", "12x40"),
    series("qarm_queue_capacity_items", "", "2048x40"),
    series("qarm_store_errors_total", 'store="redis", op="write"', "0x40"),
    series("qarm_errors_total", 'kind="invalid_input"', "0+1x40"),
    series("qarm_bundle_info", 'version="v1", path="/bundles/v1"', "1x40"),
    {
        "series": f'up{{job="qarm", namespace="recs", instance="10.0.0.7:8000", pod="{POD}"}}',
        "values": "1x40",
    },
    {
        "series": f'kube_pod_status_ready{{namespace="recs", pod="{POD}", condition="false"}}',
        "values": "0x40",
    },
]

ALERTS = [
    "QarmWriteLatencyHigh",
    "QarmReadLatencyHigh",
    "QarmHigh5xxRate",
    "QarmQueueSaturated",
    "QarmStoreErrors",
    "QarmBatcherDead",
    "QarmNotReady",
    "QarmTargetDown",
    "QarmReloadFailed",
    "QarmVersionsDisagree",
]

# alert -> (input series, the labels it fires with besides alertname)
FIRING: dict[str, tuple[list[dict[str, str]], dict[str, str]]] = {
    "QarmWriteLatencyHigh": (
        [latency("1", 0), latency("2.5", 1), latency("5", 2), latency("+Inf", 60)],
        {"severity": "warning"},
    ),
    "QarmReadLatencyHigh": (
        [
            latency("0.05", 100, "/v1/codes:batchGet"),
            latency("0.25", 150, "/v1/codes:batchGet"),
            latency("+Inf", 200, "/v1/codes:batchGet"),
        ],
        {"severity": "warning"},
    ),
    "QarmHigh5xxRate": ([requests("200", 600), requests("503", 60)], {"severity": "critical"}),
    "QarmQueueSaturated": (
        [
            series("qarm_queue_depth_items", "", "1900x40"),
            series("qarm_queue_capacity_items", "", "2048x40"),
        ],
        {"severity": "warning", "pod": POD},
    ),
    "QarmStoreErrors": (
        [series("qarm_store_errors_total", 'store="redis", op="write"', "0+30x40")],
        {"severity": "critical", "pod": POD, "op": "write"},
    ),
    "QarmBatcherDead": (
        [series("qarm_errors_total", 'kind="batcher_dead"', "0x10 5+5x30")],
        {"severity": "critical", "pod": POD},
    ),
    "QarmNotReady": (
        [
            {
                "series": f'kube_pod_status_ready{{namespace="recs", pod="{POD}", '
                'condition="false"}',
                "values": "1x40",
            }
        ],
        {"severity": "warning", "pod": POD},
    ),
    "QarmTargetDown": (
        [
            {
                "series": f'up{{job="qarm", namespace="recs", instance="10.0.0.7:8000", '
                f'pod="{POD}"}}',
                "values": "0x40",
            }
        ],
        {
            "severity": "warning",
            "job": "qarm",
            "namespace": "recs",
            "instance": "10.0.0.7:8000",
            "pod": POD,
        },
    ),
    "QarmReloadFailed": (
        [series("qarm_reloads_total", 'result="failed"', "0x30 1x10")],
        {"severity": "warning", "pod": POD},
    ),
    "QarmVersionsDisagree": (
        [
            series("qarm_bundle_info", 'version="v1", path="/bundles/v1"', "1x40"),
            {
                "series": 'qarm_bundle_info{job="qarm", namespace="recs", '
                'pod="qarm-7d9f8c6b5-b7q2m", version="v2", path="/bundles/v2"}',
                "values": "1x40",
            },
        ],
        {"severity": "warning"},
    ),
}


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return alert_rules(render({}))


def write_rules(rules: dict[str, Any], tmp_path: Path, *, annotations: bool = True) -> Path:
    rules = copy.deepcopy(rules)
    if not annotations:  # firing tests compare labels only; the templates are checked below
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False)


def test_promtool_check_rules(rules: dict[str, Any], tmp_path: Path, promtool: str) -> None:
    proc = run(promtool, "check", "rules", str(write_rules(rules, tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [r["alert"] for r in rules["groups"][0]["rules"]]
    assert sorted(names) == sorted(ALERTS)
    assert f"SUCCESS: {len(names)} rules found" in proc.stdout


def test_every_alert_has_a_runbook_entry(rules: dict[str, Any]) -> None:
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for rule in rules["groups"][0]["rules"]:
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert f"### {rule['alert']}" in operations, f"no runbook entry for {rule['alert']}"


def test_alerts_fire_on_their_symptoms_and_not_on_a_healthy_service(
    rules: dict[str, Any], tmp_path: Path, promtool: str
) -> None:
    rule_file = write_rules(rules, tmp_path, annotations=False)
    quiet = {
        "interval": "1m",
        "input_series": HEALTHY,
        "alert_rule_test": [{"eval_time": "40m", "alertname": a, "exp_alerts": []} for a in ALERTS],
    }
    tests = [quiet]
    for alert, (inputs, labels) in FIRING.items():
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": "40m", "alertname": alert, "exp_alerts": [{"exp_labels": labels}]}
                ],
            }
        )
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [rule_file.name], "evaluation_interval": "1m", "tests": tests}
        )
    )
    proc = run(promtool, "test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
