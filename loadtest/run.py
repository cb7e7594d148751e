"""`make loadtest`: the service under locust, on this machine only, then every acknowledged
write read back.

1. A demo bundle with an encoder: a synthetic catalog (codebooks.clustered, the paper's
   K=25, L=6, Nc=256, d=64) and the tests' tiny ONNX encoder (loadtest/tiny_encoder.py:
   a few matmuls, so the run measures the service's plumbing, HTTP, decoding, batching,
   quantizer and Redis, not a real encoder's cost). Built once under data/loadtest/.
2. The service (`python -m service`, one worker) on 127.0.0.1 with Redis under a key prefix
   of this run's own; `--known` items posted before the run for the readers to find.
3. locust headless against 127.0.0.1 for `--time` with `--users` users; CSV and HTML report
   under loadtest/results/.
4. Checks: no failed request, each route's p99 under loadtest/thresholds.json, and every write
   acknowledged during the run read back (API batchGet and Redis by docs/store.md's keys)
   with the codes it was answered with. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from codebooks import latest_bundle
from codebooks.build import BuildConfig, build
from codebooks.clustered import clustered_embeddings
from codebooks.summary import table
from loadtest.media import MediaPool
from service.launch import free_port, wait_ready
from store.redis_store import Keys, member, sid_bucket

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = f"loadtest-{uuid.uuid4().hex}"


def demo_bundle(root: Path, n_items: int, seed: int = 0) -> Path:
    """The newest bundle under `root`, built first if there is none (`seed`: the encoder's
    and the codebooks'; the catalog is the same for every seed)."""
    if root.exists() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return latest_bundle(root)
    from loadtest.tiny_encoder import build_encoder, build_tokenizer, encoder_spec

    dim = 64
    print(f"building a demo bundle: {n_items} synthetic items, d={dim}, tiny encoder ...")
    catalog = clustered_embeddings(n_items, dim, seed=0)
    work = root.parent / f"encoder-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    extra = {
        "encoder.onnx": build_encoder(work / "encoder.onnx", dim, seed=seed),
        "tokenizer.json": build_tokenizer(work / "tokenizer.json"),
    }
    return build(
        catalog.ids,
        catalog.embeddings,
        BuildConfig(gpu="off", seed=seed),
        root,
        extra_files=extra,
        encoder=encoder_spec(),
    )


def start_service(
    bundle: Path, redis_url: str, prefix: str, log: Path, extra_env: dict[str, str] | None = None
) -> tuple[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "QARM_REDIS_URL": redis_url,
        "QARM_REDIS_PREFIX": prefix,
        "QARM_TOKENS": json.dumps(
            [{"name": "loadtest", "token": TOKEN, "scopes": ["write", "read", "admin"]}]
        ),
        "QARM_LOG_LEVEL": "WARNING",
    }
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
         "--bundle", str(bundle)],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


def post_known(client: httpx.Client, run: str, n: int) -> list[dict[str, Any]]:
    """Items posted before the run, the ones the ranking servers know: answers them."""
    pool = MediaPool(seed=7, covers=8, clips=4)
    items = [pool.item(f"known-{run}-{i}") for i in range(n)]
    for start in range(0, n, 64):
        r = client.post("/v1/items", json={"items": items[start : start + 64]})
        r.raise_for_status()
    return items


def locust_command(url: str, args: argparse.Namespace) -> list[str]:
    results = args.results
    return [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
        "--host", url, "--users", str(args.users), "--spawn-rate", str(args.users),
        "--run-time", f"{args.time}s", "--stop-timeout", "15",
        "--csv", str(results / "locust"), "--html", str(results / "report.html"),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip


def locust(url: str, args: argparse.Namespace, env: dict[str, str]) -> int:
    cmd = locust_command(url, args)
    return subprocess.run(cmd, env={**os.environ, **env}, cwd=ROOT, check=False).returncode


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        # keys: "POST /v1/items", "POST /v1/codes:batchGet", "Aggregated"
        return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(f)}


def check_thresholds(stats: dict[str, dict[str, str]], thresholds: dict[str, Any]) -> list[str]:
    problems = []
    total = stats["Aggregated"]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    rate = failures / max(requests, 1)
    if rate > thresholds["max_error_rate"]:
        problems.append(f"{failures} of {requests} requests failed ({rate:.2%})")
    for name, limit in thresholds["p99_ms"].items():
        if name not in stats:
            problems.append(f"{name}: no requests")
            continue
        p99 = float(stats[name]["99%"])
        if p99 > limit:
            problems.append(f"{name}: p99 {p99:.0f} ms above the threshold of {limit} ms")
    for name, least in thresholds.get("min_requests", {}).items():
        count = int(stats.get(name, {}).get("Request Count", 0))
        if count < least:
            problems.append(f"{name}: {count} requests, fewer than {least}: the run did not load")
    return problems


def decode_item(value: bytes) -> tuple[list[int], list[int], int]:
    """docs/store.md's item value (format 1) -> (rq, vq, suffix)."""
    fmt, levels, k, suffix = struct.unpack_from("<BBHI", value)
    if fmt != 1:
        raise ValueError(f"item value format {fmt}, expected 1")
    rq = list(struct.unpack_from(f"<{levels}H", value, 8))
    vq = list(struct.unpack_from(f"<{k}I", value, 8 + 2 * levels))
    return rq, vq, suffix


def read_back(
    client: httpx.Client, r: redis.Redis, prefix: str, acks: Path
) -> tuple[int, list[str]]:
    """Every acknowledged write, read through the API and straight from Redis under the
    version that acknowledged it (the API answers another after a switch: then only that it
    has codes is checked there)."""
    records = [json.loads(line) for line in acks.read_text().splitlines() if line.strip()]
    latest = {rec["id"]: rec for rec in records}  # ids are never reused, so no overwrites
    problems = []
    if len(latest) != len(records):
        problems.append(f"{len(records) - len(latest)} ids acknowledged twice")
    ids = list(latest)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        got = client.post("/v1/codes:batchGet", json={"ids": chunk}).json()["items"]
        for item_id, codes in zip(chunk, got, strict=True):
            want = latest[item_id]
            if codes is None:
                problems.append(f"{item_id}: acknowledged, but the API has no codes")
            elif codes["bundle_version"] != want["bundle_version"]:
                continue  # acknowledged before a switch: Redis is read under its version below
            elif any(codes[k] != want[k] for k in ("vq", "rq", "suffix", "sid")):
                problems.append(f"{item_id}: API answers other codes than acknowledged")
        keys = Keys(prefix)
        pipe = r.pipeline(transaction=False)
        for i in chunk:
            pipe.hget(keys.items(latest[i]["bundle_version"], i), i)
        for item_id, value in zip(chunk, pipe.execute(), strict=True):
            want = latest[item_id]
            if not isinstance(value, bytes):
                problems.append(f"{item_id}: acknowledged, but not in Redis")
                continue
            rq, vq, suffix = decode_item(value)
            if (rq, vq, suffix) != (want["rq"], want["vq"], want["suffix"]):
                problems.append(f"{item_id}: Redis holds other codes than acknowledged")
            sid = want["sid"]
            index = keys.index(want["bundle_version"], sid_bucket(sid))
            entries = r.zrangebylex(index, f"[{sid} ", f"({sid}!")
            if entries != [member(sid, item_id).encode()]:
                problems.append(f"{item_id}: sid {want['sid']} does not point back at it")
    return len(ids), problems


def scrape(client: httpx.Client) -> dict[str, float]:
    """A few service-side numbers for the summary, from /metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "qarm_batch_size_items_sum":
                out["batch_items_sum"] = s.value
            elif s.name == "qarm_batch_size_items_count":
                out["batches"] = s.value
            elif s.name == "qarm_items_encoded_total":
                out["items_encoded"] = out.get("items_encoded", 0.0) + s.value
            elif s.name == "qarm_queue_wait_seconds_sum":
                out["queue_wait_sum_s"] = s.value
            elif s.name == "qarm_queue_wait_seconds_count":
                out["queue_waits"] = s.value
            elif s.name == "qarm_stage_duration_seconds_sum":
                out[f"stage_{s.labels['stage']}_sum_s"] = s.value
            elif s.name == "qarm_stage_duration_seconds_count":
                out[f"stage_{s.labels['stage']}_count"] = s.value
    return out


def summary_table(stats: dict[str, dict[str, str]], seconds: float) -> str:
    headers = ["request", "count", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    rows = [
        [
            name,
            row["Request Count"],
            row["Failure Count"],
            f"{int(row['Request Count']) / seconds:.1f}",
            row["50%"],
            row["95%"],
            row["99%"],
            f"{float(row['Max Response Time']):.0f}",
        ]
        for name, row in stats.items()
    ]
    return table(headers, rows, align="lrrrrrrr", pad=False)


@dataclass(frozen=True)
class Outcome:
    """What a run under load measured and found wrong."""

    stats: dict[str, dict[str, str]]  # locust's CSV rows by "<method> <route>" and "Aggregated"
    seconds: float  # wall time of the locust run
    before: dict[str, float]  # `scrape` of the service before the run
    after: dict[str, float]  # and after it
    checked: int  # acknowledged writes read back
    problems: list[str]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    thresholds = json.loads(args.thresholds.read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    acks = args.results / "acks.jsonl"
    acks.unlink(missing_ok=True)
    bundle = demo_bundle(args.bundle_root, args.catalog)
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    prefix = f"qarm-loadtest-{run}"
    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    print(f"bundle {bundle.name}; Redis {args.redis_url} prefix {prefix}")
    url, proc = start_service(bundle, args.redis_url, prefix, args.results / "service.log")
    try:
        outcome = load(url, r, prefix, run, acks, thresholds, args)
    finally:
        stop(proc, r, prefix, keep_keys=args.keep_keys)
    summary = summarize(outcome, run, bundle, args)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_report(outcome, summary, args.results)
    if outcome.problems:
        print("\nFAILED:\n  " + "\n  ".join(outcome.problems), file=sys.stderr)
        return 1
    print("loadtest: green")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; refuses a Redis that is not on this machine."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--time", type=int, default=60, help="seconds of load")
    parser.add_argument(
        "--users", type=int, default=8, help="locust users (1 uploader : 3 readers)"
    )
    parser.add_argument("--known", type=int, default=2048, help="items posted before the run")
    parser.add_argument("--catalog", type=int, default=20000, help="items of the demo bundle")
    parser.add_argument(
        "--bundle-root", type=Path, default=ROOT / "data" / "loadtest" / "artifacts"
    )
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--thresholds", type=Path, default=HERE / "thresholds.json")
    parser.add_argument("--keep-keys", action="store_true", help="leave this run's Redis keys")
    args = parser.parse_args(argv)
    host = httpx.URL(args.redis_url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load test runs against this machine only: --redis-url on 127.0.0.1")
    return args


def load(
    url: str,
    r: redis.Redis,
    prefix: str,
    run: str,
    acks: Path,
    thresholds: dict[str, Any],
    args: argparse.Namespace,
) -> Outcome:
    """Post the known items, run locust, check its numbers against `thresholds`, and read
    every acknowledged write back."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        known = [item["id"] for item in post_known(client, run, args.known)]
        (args.results / "known.json").write_text(json.dumps(known))
        before = scrape(client)
        env = {
            "QARM_LOADTEST_TOKEN": TOKEN,
            "QARM_LOADTEST_KNOWN": str(args.results / "known.json"),
            "QARM_LOADTEST_ACKS": str(acks),
            "QARM_LOADTEST_RUN": run,
        }
        print(f"locust: {args.users} users for {args.time} s against {url}")
        started = time.monotonic()
        rc = locust(url, args, env)
        elapsed = time.monotonic() - started
        after = scrape(client)
        stats = read_stats(args.results / "locust_stats.csv")
        problems = check_thresholds(stats, thresholds)
        if rc != 0 and not problems:
            problems.append(f"locust exited with status {rc}")
        checked, readback = read_back(client, r, prefix, acks)
        problems += readback[:20]
        if len(readback) > 20:
            problems.append(f"... and {len(readback) - 20} more read-back problems")
    return Outcome(stats, elapsed, before, after, checked, problems)


def stop(proc: subprocess.Popen[bytes], r: redis.Redis, prefix: str, keep_keys: bool) -> None:
    """SIGTERM the service; delete this run's Redis keys unless `keep_keys`."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    if not keep_keys:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(keys), 5000):
            r.unlink(*keys[start : start + 5000])
    r.close()


def summarize(outcome: Outcome, run: str, bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    """loadtest/results/summary.json: locust's rows and the service's own numbers over the run."""
    delta = {k: outcome.after.get(k, 0.0) - outcome.before.get(k, 0.0) for k in outcome.after}
    batches = max(delta.get("batches", 0.0), 1.0)
    return {
        "run": run,
        "bundle": bundle.name,
        "users": args.users,
        "seconds": args.time,
        "wall_s": round(outcome.seconds, 1),
        "requests": {k: {c: row[c] for c in row} for k, row in outcome.stats.items()},
        "items_encoded": delta.get("items_encoded", 0.0),
        "mean_batch_items": delta.get("batch_items_sum", 0.0) / batches,
        "mean_queue_wait_ms": 1000
        * delta.get("queue_wait_sum_s", 0.0)
        / max(delta.get("queue_waits", 0.0), 1.0),
        "mean_stage_ms_per_batch": {
            stage: 1000
            * delta.get(f"stage_{stage}_sum_s", 0.0)
            / max(delta.get(f"stage_{stage}_count", 0.0), 1.0)
            for stage in ("decode", "encode", "quantize", "store")
        },
        "acknowledged_writes_checked": outcome.checked,
        "problems": outcome.problems,
    }


def print_report(outcome: Outcome, summary: dict[str, Any], results: Path) -> None:
    elapsed = outcome.seconds
    print()
    print(summary_table(outcome.stats, elapsed))
    print(
        f"\nitems encoded {summary['items_encoded']:.0f} "
        f"({summary['items_encoded'] / elapsed:.0f}/s), mean batch "
        f"{summary['mean_batch_items']:.1f} items, mean queue wait "
        f"{summary['mean_queue_wait_ms']:.1f} ms; stage ms per batch (decode per request): "
        + ", ".join(f"{k} {v:.1f}" for k, v in summary["mean_stage_ms_per_batch"].items())
    )
    print(f"read back {outcome.checked} acknowledged writes (API and Redis)")
    print(f"reports: {results}/report.html, locust_stats.csv, summary.json")


if __name__ == "__main__":
    sys.exit(main())
