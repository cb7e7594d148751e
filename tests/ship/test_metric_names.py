"""Every metric the dashboard and the alerts use is one the service exports: the names are
read from a live /metrics of the app (tiny bundle, real Redis) after a few requests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.keys import own_prefix
from tests.service.conftest import auth, make_bundle, png_b64, running, wav_b64
from tests.ship.conftest import alert_rules, dashboard, dashboard_exprs, render

# Series that come from outside the service, each from the exporter that provides it.
EXTERNAL = {
    "up": "Prometheus (scrape health of each target)",
    "kube_pod_status_ready": "kube-state-metrics (the readiness probe's result)",
}

# Suffixes prometheus_client adds to a family's name, by type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}

KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our queries):
    strings, label matchers, ranges and grouping clauses are removed; what is left that is
    neither a function call, a keyword nor a number is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_name_lexer() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(qarm_x_bucket{job=~"$job", '
        'route="/v1/items"}[$__rate_interval]))) / on(pod) group_left qarm_y > 0.5 or up == 0'
    ) == {"qarm_x_bucket", "qarm_y", "up"}
    query = 'label_values(qarm_bundle_info{namespace=~"$ns"}, job)'
    assert used_names([query], label_values=True) == {"qarm_bundle_info"}
    assert metric_names("qarm_requests_total_typo offset 5m") == {"qarm_requests_total_typo"}


def used_names(exprs: Iterable[str], *, label_values: bool = False) -> set[str]:
    names: set[str] = set()
    for expr in exprs:
        if label_values and expr.startswith("label_values("):
            # label_values(<selector>, <label>): only the selector names a metric
            expr = expr[len("label_values(") : expr.rindex(",")]
        names |= metric_names(expr)
    return names


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


TOKEN = "ship-token-0123456789"


@pytest.fixture(scope="module")
async def scraped(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> str:
    """/metrics of a live app after a write, a read, a rejected write and a failed reload."""
    root = tmp_path_factory.mktemp("ship-bundle")
    bundle = make_bundle(root / "a", root / "work", seed=5)
    with own_prefix(redis_url) as prefix:
        settings = Settings(
            bundle=str(bundle),
            redis_url=redis_url,
            redis_prefix=prefix,
            max_wait_ms=1.0,
            tokens=[{"name": "all", "token": TOKEN, "scopes": ["write", "read", "admin"]}],
        )
        async with running(settings) as (_, client):
            headers = auth(TOKEN)
            item = {"id": "ship-1", "text": "red cat", "image": png_b64(1), "audio": wav_b64(2)}
            r = await client.post("/v1/items", json={"items": [item]}, headers=headers)
            assert r.status_code == 200, r.text
            r = await client.post(
                "/v1/codes:batchGet", json={"ids": ["ship-1", "nope"]}, headers=headers
            )
            assert r.status_code == 200, r.text
            r = await client.post("/v1/items", json={"items": [{"id": "bad id"}]}, headers=headers)
            assert r.status_code == 422
            r = await client.post(
                "/admin/reload", json={"bundle": str(root / "missing")}, headers=headers
            )
            assert r.status_code >= 400
            text = (await client.get("/metrics")).text
    return text


@pytest.fixture(scope="module")
def exported(scraped: str) -> set[str]:
    """Sample names /metrics can carry: each family's name with its type's suffixes."""
    names = set()
    for family in text_string_to_metric_families(scraped):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def labels_seen(scraped: str) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry (only names that had samples)."""
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            seen.setdefault(sample.name, set()).update(sample.labels)
    return seen


# Labels Prometheus adds to every series it scrapes through the ServiceMonitor.
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "endpoint", "container"}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """`name{a="x", b=~"y"}` -> [(name, {a, b})] for every selector with matchers."""
    out = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        keys = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2)))
        out.append((match.group(1), keys))
    return out


def test_selector_lexer() -> None:
    assert selectors('rate(qarm_x_total{job=~"$job", kind="a", route!~"/v1/.*"}[5m])') == [
        ("qarm_x_total", {"job", "kind", "route"})
    ]


@pytest.mark.anyio
async def test_label_matchers_name_labels_the_metrics_have(
    labels_seen: dict[str, set[str]],
) -> None:
    rules = alert_rules(render({}))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exprs += list(dashboard_exprs(dashboard(render({}))))
    checked = 0
    for expr in exprs:
        for name, keys in selectors(expr):
            if name in EXTERNAL or name not in labels_seen:
                continue  # no sample of it in this scrape (e.g. no store error happened)
            unknown = keys - labels_seen[name] - TARGET_LABELS
            assert not unknown, f"{name} has no label(s) {sorted(unknown)}: {expr}"
            checked += 1
    assert checked >= 20


@pytest.mark.anyio
async def test_live_metrics_carry_the_stage_histograms(exported: set[str]) -> None:
    for name in (
        "qarm_requests_total",
        "qarm_request_duration_seconds_bucket",
        "qarm_stage_duration_seconds_count",
        "qarm_queue_depth_items",
        "qarm_queue_capacity_items",
        "qarm_bundle_info",
    ):
        assert name in exported


@pytest.mark.anyio
async def test_dashboard_uses_only_exported_metrics(exported: set[str]) -> None:
    board = dashboard(render({}))
    used = used_names(dashboard_exprs(board), label_values=True)
    assert len(used) >= 10
    missing = sorted(used - exported - EXTERNAL.keys())
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"


@pytest.mark.anyio
async def test_alerts_use_only_exported_metrics(exported: set[str]) -> None:
    rules = alert_rules(render({}))
    used = used_names(r["expr"] for g in rules["groups"] for r in g["rules"])
    missing = sorted(used - exported - EXTERNAL.keys())
    assert not missing, f"the alerts query metrics the service does not export: {missing}"
    assert used & EXTERNAL.keys() == EXTERNAL.keys()  # both external ones are documented below


def test_external_metrics_are_documented() -> None:
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for name, source in EXTERNAL.items():
        assert f"`{name}`" in operations, f"docs/operations.md must say where {name} comes from"
        assert source.split(" ")[0] in operations
