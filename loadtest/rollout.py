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
from dataclasses import dataclass, field
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
from store.redis_store import Keys


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
        keys = Keys(prefix)
        pipe = r.pipeline(transaction=False)
        for i in chunk:
            pipe.hget(keys.items(version, i), i)
        values = pipe.execute()
        missing += [i for i, v in zip(chunk, values, strict=True) if v is None]
    return missing


@dataclass
class Rollout:
    """What the stages share: the arguments, both bundles, this run's Redis prefix and
    connection, the processes started (so that `stop` ends them whatever failed) and the
    problems found so far."""

    args: argparse.Namespace
    bundle_a: Path
    bundle_b: Path
    run: str
    prefix: str
    r: redis.Redis
    log: Path  # the backfill's output, every call appended
    export: Path  # the known items as the catalog export (known.parquet)
    pods: list[tuple[str, Any]] = field(default_factory=list)
    locusts: list[subprocess.Popen[bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [url for url, _ in self.pods]

    @property
    def store_env(self) -> dict[str, str]:
        """The backfill's environment: this run's Redis prefix, bundles looked up beside B."""
        return {
            "QARM_REDIS_URL": self.args.redis_url,
            "QARM_REDIS_PREFIX": self.prefix,
            "QARM_ARTIFACTS": str(self.args.root / "artifacts-b"),
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ro = prepare(args)
    ro.pods = start_pods(ro)  # before `try`: `stop` ends only what has fully started
    try:
        known = post_known_items(ro)
        stage_b(ro)
        load_started = start_locusts(ro)
        backfill_export(ro)
        switch_s = activate_b(ro, load_started)
        codes = [p.wait() for p in ro.locusts]
        acked = check_pods(ro, codes)
        check_codes_under_b(ro, acked + [i["id"] for i in known])
    finally:
        stop(ro)
    write_summary(ro, known, acked, switch_s)
    return verdict(ro, known, acked)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; refuses a Redis that is not on this machine."""
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
    return args


def prepare(args: argparse.Namespace) -> Rollout:
    """1. A fresh results folder, both demo bundles, this run's id and prefix, Redis reached."""
    args.results.mkdir(parents=True, exist_ok=True)
    log = args.results / "backfill.log"
    log.unlink(missing_ok=True)
    bundle_a = demo_bundle(args.root / "artifacts", args.catalog, seed=0)
    bundle_b = demo_bundle(args.root / "artifacts-b", args.catalog, seed=1)
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    prefix = f"qarm-rollout-{run}"
    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    print(f"bundles A {bundle_a.name}, B {bundle_b.name}; Redis {args.redis_url} prefix {prefix}")
    return Rollout(args, bundle_a, bundle_b, run, prefix, r, log, args.results / "known.parquet")


def start_pods(ro: Rollout) -> list[tuple[str, Any]]:
    """2. Two service processes on A, able to find B beside it: (url, process) each."""
    args = ro.args
    return [
        start_service(
            ro.bundle_a, args.redis_url, ro.prefix, args.results / f"service-{n}.log",
            {"QARM_POD_NAME": f"pod-{n}", "QARM_ARTIFACTS": str(args.root / "artifacts-b")},
        )
        for n in range(2)
    ]  # fmt: skip


def api_client(url: str) -> httpx.Client:
    """A client of one service process, with the load test's token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


def post_known_items(ro: Rollout) -> list[dict[str, Any]]:
    """`--known` items posted to the first process, written as the catalog export and as
    known.json (their ids, for locust)."""
    with api_client(ro.urls[0]) as client:
        known = post_known(client, ro.run, ro.args.known)
    write_export(known, ro.export)
    (ro.args.results / "known.json").write_text(json.dumps([i["id"] for i in known]))
    return known


def stage_b(ro: Rollout) -> None:
    """3. `backfill run --bundle B` before any load: B staged, its own catalog coded."""
    started = time.monotonic()
    backfill(["run", "--bundle", str(ro.bundle_b)], ro.store_env, ro.log)
    print(f"B staged and its catalog backfilled in {time.monotonic() - started:.1f} s")


def start_locusts(ro: Rollout) -> float:
    """4. One locust per process, each with its own results folder; the load's start
    (time.monotonic())."""
    args = ro.args
    for n, url in enumerate(ro.urls):
        results = args.results / f"pod-{n}"
        results.mkdir(exist_ok=True)
        (results / "acks.jsonl").unlink(missing_ok=True)
        env = {
            "QARM_LOADTEST_TOKEN": TOKEN,
            "QARM_LOADTEST_KNOWN": str(args.results / "known.json"),
            "QARM_LOADTEST_ACKS": str(results / "acks.jsonl"),
            "QARM_LOADTEST_RUN": f"{ro.run}-{n}",
        }
        cmd = locust_command(url, argparse.Namespace(**{**vars(args), "results": results}))
        ro.locusts.append(subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT))
    print(f"locust: {args.users} users per process for {args.time} s against {ro.urls}")
    return time.monotonic()


def backfill_export(ro: Rollout) -> None:
    """`backfill run --bundle B --catalog known.parquet` under load."""
    started = time.monotonic()
    export = ["--catalog", str(ro.export)]
    backfill(["run", "--bundle", str(ro.bundle_b), *export], ro.store_env, ro.log)
    print(f"the export backfilled under load in {time.monotonic() - started:.1f} s")


def activate_b(ro: Rollout, load_started: float) -> float | None:
    """`backfill activate B` once `--activate-after` s of load have passed; the seconds
    until both processes answer with B (None, and a problem, if not within 120 s)."""
    time.sleep(max(0.0, ro.args.activate_after - (time.monotonic() - load_started)))
    clock = SwitchClock(ro.r, ro.prefix, ro.urls, ro.bundle_b.name)
    clock.start()
    started = time.monotonic()
    backfill(["activate", ro.bundle_b.name], ro.store_env, ro.log)
    print(f"backfill activate returned after {time.monotonic() - started:.1f} s")
    switch_s = clock.seconds(timeout_s=120)
    if switch_s is None:
        ro.problems.append("not every process answered with B within 120 s")
    else:
        print(f"{{P}}:active -> B until both processes answer with B: {switch_s:.2f} s")
    return switch_s


def check_pods(ro: Rollout, codes: list[int]) -> list[str]:
    """5. Each locust's thresholds, exit status and read-back (through the second process);
    the ids of every write acknowledged during the run."""
    thresholds = json.loads(ro.args.thresholds.read_text())
    acked: list[str] = []
    with api_client(ro.urls[1]) as client:
        for n in range(len(ro.urls)):
            results = ro.args.results / f"pod-{n}"
            stats = read_stats(results / "locust_stats.csv")
            ro.problems += [f"pod-{n}: {p}" for p in check_thresholds(stats, thresholds)]
            if codes[n] != 0:
                ro.problems.append(f"pod-{n}: locust exited with status {codes[n]}")
            _, readback = read_back(client, ro.r, ro.prefix, results / "acks.jsonl")
            ro.problems += readback[:10]
            lines = (results / "acks.jsonl").read_text().splitlines()
            acked += [json.loads(line)["id"] for line in lines if line.strip()]
    return acked


def check_codes_under_b(ro: Rollout, ids: list[str]) -> None:
    """A problem if any of `ids` has no codes under B in Redis."""
    lost = missing_under(ro.r, ro.prefix, ro.bundle_b.name, ids)
    if lost:
        ro.problems.append(f"{len(lost)} acknowledged items have no codes under B: {lost[:5]}")


def stop(ro: Rollout) -> None:
    """Locusts killed, services stopped, this run's Redis keys deleted: whatever failed."""
    for p in ro.locusts:
        if p.poll() is None:
            p.kill()
    for _, proc in ro.pods:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    keys = list(ro.r.scan_iter(match=f"{ro.prefix}:*", count=5000))
    for start in range(0, len(keys), 5000):
        ro.r.unlink(*keys[start : start + 5000])
    ro.r.close()


def write_summary(
    ro: Rollout, known: list[dict[str, Any]], acked: list[str], switch_s: float | None
) -> None:
    """summary.json in the results folder: the run, its sizes, switch seconds, problems."""
    summary = {
        "run": ro.run,
        "bundles": [ro.bundle_a.name, ro.bundle_b.name],
        "users_per_process": ro.args.users,
        "seconds": ro.args.time,
        "acknowledged_writes": len(acked),
        "known_items": len(known),
        "switch_seconds": switch_s,
        "problems": ro.problems,
    }
    (ro.args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def verdict(ro: Rollout, known: list[dict[str, Any]], acked: list[str]) -> int:
    """Prints what was checked and any problems; the exit status (1 when a check failed)."""
    print(f"{len(acked)} acknowledged writes and {len(known)} known items checked under B")
    if ro.problems:
        print("\nFAILED:\n  " + "\n  ".join(ro.problems), file=sys.stderr)
        return 1
    print("loadtest-rollout: green")
    return 0


if __name__ == "__main__":
    sys.exit(main())
