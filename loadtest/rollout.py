"""`make loadtest-rollout`: a new bundle goes live under locust load, on this machine only.

1. Two demo bundles, A and B: the same synthetic catalog, other encoder and codebook seeds
   (loadtest.run's demo bundle, built once under data/loadtest/).
2. Two service processes on A, Redis under this run's key prefix; `--known` items posted
   (their content is also written as the catalog export, a Parquet file).
3. `python -m backfill run --bundle B`: B is staged (both processes load it and write every
   upload under it too) and its own catalog gets its codes.
4. locust against each process for `--time` s. Under that load: `python -m backfill run
   --bundle B --catalog known.parquet` (the export), then `python -m backfill activate B`.
   Meanwhile each process is polled until it answers with B.
5. Checks: no failed request; every write acknowledged during the run, and every known item,
   has codes under B (read from Redis by docs/store.md's keys); the acknowledged codes read
   back as `make loadtest` does. The seconds from `{P}:active` = B until both processes
   answer with B are printed and kept in summary.json. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from loadtest.run import (
    HERE,
    ROOT,
    TOKEN,
    check_thresholds,
    demo_bundle,
    locust_command,
    post_known,
    read_back,
    read_stats,
    start_service,
)


def write_export(items: list[dict[str, Any]], path: Path) -> None:
    """API items (base64 media) as the backfill's catalog export: id, text, image, audio."""

    def raw(item: dict[str, Any], field: str) -> bytes | None:
        return base64.b64decode(item[field]) if field in item else None

    table = pa.table(
        {
            "id": [i["id"] for i in items],
            "text": [i.get("text") for i in items],
            "image": pa.array([raw(i, "image") for i in items], pa.binary()),
            "audio": pa.array([raw(i, "audio") for i in items], pa.binary()),
        }
    )
    pq.write_table(table, path)


def backfill(args: list[str], env: dict[str, str], log: Path) -> None:
    """`python -m backfill ...`; raises with its log's tail if it fails."""
    with log.open("a") as out:
        out.write(f"\n$ python -m backfill {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "backfill", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"backfill {args[0]} exited with {proc.returncode}:\n{tail}")


class SwitchClock:
    """Polls `{P}:active` and each process until all answer with `version`: the seconds
    from the pointer's switch to the last process's."""

    def __init__(self, r: redis.Redis, prefix: str, urls: list[str], version: str) -> None:
        self.r, self.prefix, self.urls, self.version = r, prefix, urls, version
        self.switched_at: float | None = None
        self.all_at: float | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def seconds(self, timeout_s: float) -> float | None:
        self._thread.join(timeout_s)
        if self.switched_at is None or self.all_at is None:
            return None
        return self.all_at - self.switched_at

    def _poll(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        clients = [httpx.Client(base_url=u, headers=headers, timeout=10) for u in self.urls]
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                if self.switched_at is None:
                    active = self.r.get(f"{self.prefix}:active")
                    if isinstance(active, bytes) and active.decode() == self.version:
                        self.switched_at = time.monotonic()
                if self.switched_at is not None:
                    answers = [c.post("/v1/codes:batchGet", json={"ids": ["x"]}) for c in clients]
                    if all(a.json()["bundle_version"] == self.version for a in answers):
                        self.all_at = time.monotonic()
                        return
                time.sleep(0.05)
        finally:
            for c in clients:
                c.close()


def missing_under(r: redis.Redis, prefix: str, version: str, ids: list[str]) -> list[str]:
    missing = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        values = r.mget([f"{prefix}:{version}:item:{i}" for i in chunk])
        missing += [i for i, v in zip(chunk, values, strict=True) if v is None]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.rollout", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--time", type=int, default=150, help="seconds of load")
    parser.add_argument("--users", type=int, default=4, help="locust users per process")
    parser.add_argument("--known", type=int, default=1024, help="items posted before the run")
    parser.add_argument("--catalog", type=int, default=20000, help="items of the demo bundles")
    parser.add_argument("--activate-after", type=float, default=20.0, help="s of load first")
    parser.add_argument("--root", type=Path, default=ROOT / "data" / "loadtest")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "rollout")
    parser.add_argument("--thresholds", type=Path, default=HERE / "thresholds.json")
    args = parser.parse_args(argv)
    if httpx.URL(args.redis_url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load test runs against this machine only: --redis-url on 127.0.0.1")
    args.results.mkdir(parents=True, exist_ok=True)
    log = args.results / "backfill.log"
    log.unlink(missing_ok=True)

    bundle_a = demo_bundle(args.root / "artifacts", args.catalog, seed=0)
    bundle_b = demo_bundle(args.root / "artifacts-b", args.catalog, seed=1)
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    prefix = f"qarm-rollout-{run}"
    store_env = {
        "QARM_REDIS_URL": args.redis_url,
        "QARM_REDIS_PREFIX": prefix,
        "QARM_ARTIFACTS": str(args.root / "artifacts-b"),
    }
    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    print(f"bundles A {bundle_a.name}, B {bundle_b.name}; Redis {args.redis_url} prefix {prefix}")
    pods = [
        start_service(
            bundle_a, args.redis_url, prefix, args.results / f"service-{n}.log",
            {"QARM_POD_NAME": f"pod-{n}", "QARM_ARTIFACTS": str(args.root / "artifacts-b")},
        )
        for n in range(2)
    ]  # fmt: skip
    urls = [url for url, _ in pods]
    problems: list[str] = []
    locusts: list[subprocess.Popen[bytes]] = []
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=urls[0], headers=headers, timeout=60) as client:
            known = post_known(client, run, args.known)
        export = args.results / "known.parquet"
        write_export(known, export)
        (args.results / "known.json").write_text(json.dumps([i["id"] for i in known]))
        started = time.monotonic()
        backfill(["run", "--bundle", str(bundle_b)], store_env, log)
        print(f"B staged and its catalog backfilled in {time.monotonic() - started:.1f} s")

        for n, url in enumerate(urls):
            results = args.results / f"pod-{n}"
            results.mkdir(exist_ok=True)
            (results / "acks.jsonl").unlink(missing_ok=True)
            env = {
                "QARM_LOADTEST_TOKEN": TOKEN,
                "QARM_LOADTEST_KNOWN": str(args.results / "known.json"),
                "QARM_LOADTEST_ACKS": str(results / "acks.jsonl"),
                "QARM_LOADTEST_RUN": f"{run}-{n}",
            }
            cmd = locust_command(url, argparse.Namespace(**{**vars(args), "results": results}))
            locusts.append(subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT))
        print(f"locust: {args.users} users per process for {args.time} s against {urls}")
        load_started = time.monotonic()
        started = time.monotonic()
        backfill(["run", "--bundle", str(bundle_b), "--catalog", str(export)], store_env, log)
        print(f"the export backfilled under load in {time.monotonic() - started:.1f} s")
        time.sleep(max(0.0, args.activate_after - (time.monotonic() - load_started)))
        clock = SwitchClock(r, prefix, urls, bundle_b.name)
        clock.start()
        started = time.monotonic()
        backfill(["activate", bundle_b.name], store_env, log)
        print(f"backfill activate returned after {time.monotonic() - started:.1f} s")
        switch_s = clock.seconds(timeout_s=120)
        if switch_s is None:
            problems.append("not every process answered with B within 120 s")
        else:
            print(f"{{P}}:active -> B until both processes answer with B: {switch_s:.2f} s")
        codes = [p.wait() for p in locusts]

        thresholds = json.loads(args.thresholds.read_text())
        acked: list[str] = []
        with httpx.Client(base_url=urls[1], headers=headers, timeout=60) as client:
            for n in range(len(urls)):
                results = args.results / f"pod-{n}"
                stats = read_stats(results / "locust_stats.csv")
                problems += [f"pod-{n}: {p}" for p in check_thresholds(stats, thresholds)]
                if codes[n] != 0:
                    problems.append(f"pod-{n}: locust exited with status {codes[n]}")
                _, readback = read_back(client, r, prefix, results / "acks.jsonl")
                problems += readback[:10]
                lines = (results / "acks.jsonl").read_text().splitlines()
                acked += [json.loads(line)["id"] for line in lines if line.strip()]
        lost = missing_under(r, prefix, bundle_b.name, acked + [i["id"] for i in known])
        if lost:
            problems.append(f"{len(lost)} acknowledged items have no codes under B: {lost[:5]}")
    finally:
        for p in locusts:
            if p.poll() is None:
                p.kill()
        for _, proc in pods:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(keys), 5000):
            r.unlink(*keys[start : start + 5000])
        r.close()

    summary = {
        "run": run,
        "bundles": [bundle_a.name, bundle_b.name],
        "users_per_process": args.users,
        "seconds": args.time,
        "acknowledged_writes": len(acked),
        "known_items": len(known),
        "switch_seconds": switch_s,
        "problems": problems,
    }
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(acked)} acknowledged writes and {len(known)} known items checked under B")
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("loadtest-rollout: green")
    return 0


if __name__ == "__main__":
    sys.exit(main())
