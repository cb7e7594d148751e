"""`python -m loadtest.soak`: the service for 10 minutes under mixed uploads and reads, with
Redis killed (`kill -9`) twice and a bundle reload on the way. Not in CI: run it by hand (on a
shared machine, under the heavy-work lock) and put its table in docs/benchmarks.md.

1. Redis of the soak's own: a `redis-server` on a spare port, append-only with
   `appendfsync always` (what the service's durability promise stands on), in a temporary
   folder, so it can be killed without touching anyone else's.
2. The service (`python -m service`, one worker) on `make loadtest`'s demo bundle (K=25, L=6,
   Nc=256, d=64, the tiny encoder), `--known` items posted first for the readers.
3. For `--time` seconds: `--uploaders` clients posting `--batch` items (title, most with a
   JPEG cover, half with a WAV clip) and `--readers` clients reading codes (GET one item,
   batchGet of 50), each as fast as the answers come; a client answered 503 waits its
   Retry-After. Redis is killed at 20% and 70% of the run and restarted `--down` seconds later
   (same port, same append-only file); at 45% the service reloads its bundle.
4. Every acknowledged write read back through the API: lost (no codes) or changed codes.

Reported: acknowledged writes lost or changed (goal 0), answers 5xx other than 503 and
connections that failed (goal 0), the 503s by kind, the p99 of reads outside the faults and
during each kind of fault (from the kill until Redis is back and the service ready, plus
`--settle` seconds; from the reload's start until its answer, plus `--settle`), how long after
Redis's restart the first write succeeded, and the service's resident memory at the start, at
the end and at its peak. A table on stdout, JSON in `--results`/soak.json; exit status 1 when
a write was lost or changed or a 5xx other than 503 was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from codebooks.summary import table
from loadtest.media import MediaPool
from loadtest.redis_server import RedisServer
from loadtest.run import HERE, ROOT, TOKEN, demo_bundle, start_service
from service.launch import until_ready

READ_BATCH = 50  # ids per batchGet


@dataclass(frozen=True)
class Answer:
    """One request: when it started and ended (monotonic seconds), what it was, its status
    (0: the connection failed) and the error kind of a non-2xx answer."""

    start: float
    end: float
    op: str  # write, read, batch_read, reload
    status: int
    kind: str | None = None


@dataclass
class Run:
    """What the clients share: answers, acknowledged writes, fault windows, the stop flag."""

    answers: list[Answer] = field(default_factory=list)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> answered codes
    known: list[str] = field(default_factory=list)  # posted before the run
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=5000))  # acked lately
    began: float = 0.0  # monotonic seconds when the load started
    windows: list[tuple[str, float, float]] = field(default_factory=list)  # kind, start, end
    recovery_s: list[float] = field(default_factory=list)  # restart -> first 200 write
    restarted_at: float | None = None
    rss: list[float] = field(default_factory=list)  # bytes, sampled
    stop: bool = False


async def call(
    client: httpx.AsyncClient, run: Run, op: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    """One request, recorded; None when the connection failed. A 503 waits its Retry-After."""
    start = time.monotonic()
    try:
        r = await client.request(method, url, **kwargs)
    except httpx.TransportError:
        run.answers.append(Answer(start, time.monotonic(), op, 0))
        await asyncio.sleep(0.5)
        return None
    kind = None
    if r.status_code >= 400 and r.headers.get("content-type") == "application/json":
        kind = r.json().get("error", {}).get("kind")
    run.answers.append(Answer(start, time.monotonic(), op, r.status_code, kind))
    if r.status_code == 503:
        await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))
    return r


async def uploader(client: httpx.AsyncClient, run: Run, prefix: str, batch: int, seed: int) -> None:
    pool = MediaPool(seed=seed, covers=16, clips=8)
    n = 0
    while not run.stop:
        items = [pool.item(f"{prefix}-{n + i}") for i in range(batch)]
        n += batch
        r = await call(client, run, "write", "POST", "/v1/items", json={"items": items})
        if r is not None and r.status_code == 200:
            for codes in r.json()["items"]:
                run.acked[codes["id"]] = codes
                run.recent.append(codes["id"])
            if run.restarted_at is not None:
                run.recovery_s.append(time.monotonic() - run.restarted_at)
                run.restarted_at = None


async def reader(client: httpx.AsyncClient, run: Run, seed: int) -> None:
    rng = np.random.default_rng(seed)
    while not run.stop:
        ids = run.known + list(run.recent)
        if rng.random() < 0.5:
            item_id = ids[int(rng.integers(len(ids)))]
            await call(client, run, "read", "GET", f"/v1/items/{item_id}/codes")
        else:
            chosen = [ids[int(i)] for i in rng.integers(len(ids), size=READ_BATCH)]
            await call(
                client, run, "batch_read", "POST", "/v1/codes:batchGet", json={"ids": chosen}
            )


async def resident_bytes(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_resident_memory_bytes":
                return float(sample.value)
    raise RuntimeError("the service's /metrics has no process_resident_memory_bytes")


async def sample_memory(client: httpx.AsyncClient, run: Run) -> None:
    while not run.stop:
        run.rss.append(await resident_bytes(client))
        await asyncio.sleep(10)


async def faults(
    client: httpx.AsyncClient, run: Run, own: RedisServer, bundle: Path, args: argparse.Namespace
) -> None:
    """Redis killed at 20% and 70% of the run, the bundle reloaded at 45%."""
    began = run.began

    async def at(share: float) -> None:
        await asyncio.sleep(max(0.0, began + share * args.time - time.monotonic()))

    for share, what in ((0.2, "redis"), (0.45, "reload"), (0.7, "redis")):
        await at(share)
        start = time.monotonic()
        if what == "redis":
            print(f"  t={start - began:5.0f} s: kill -9 Redis; restart in {args.down:g} s")
            own.kill()
            await asyncio.sleep(args.down)
            await asyncio.to_thread(own.start)
            run.restarted_at = time.monotonic()
            await until_ready(client)
        else:
            print(f"  t={start - began:5.0f} s: POST /admin/reload")
            r = await call(
                client,
                run,
                "reload",
                "POST",
                "/admin/reload",
                json={"bundle": str(bundle)},
                timeout=300,
            )
            if r is None or r.status_code != 200:
                print(
                    f"  reload answered {r.status_code if r else 'nothing'}: {r.text if r else ''}"
                )
        run.windows.append((what, start, time.monotonic() + args.settle))


async def soak(url: str, own: RedisServer, bundle: Path, args: argparse.Namespace) -> Run:
    run = Run()
    tag = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=args.uploaders + args.readers + 4)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:
        pool = MediaPool(seed=7, covers=8, clips=4)
        for start in range(0, args.known, 64):
            items = [
                pool.item(f"known-{tag}-{i}") for i in range(start, min(start + 64, args.known))
            ]
            r = await client.post("/v1/items", json={"items": items})
            r.raise_for_status()
            run.known += [item["id"] for item in items]
        run.rss.append(await resident_bytes(client))
        print(
            f"soak: {args.uploaders} uploaders x {args.batch} items, {args.readers} readers, "
            f"{args.time} s against {url}"
        )
        uploads = [
            uploader(client, run, f"soak-{tag}-{u}", args.batch, seed=u)
            for u in range(args.uploaders)
        ]
        reads = [reader(client, run, seed=100 + r) for r in range(args.readers)]
        clients = [*uploads, *reads, sample_memory(client, run)]
        run.began = time.monotonic()
        tasks = [asyncio.create_task(c) for c in clients]
        await faults(client, run, own, bundle, args)
        await asyncio.sleep(max(0.0, run.began + args.time - time.monotonic()))
        run.stop = True
        await asyncio.gather(*tasks)
        run.rss.append(await resident_bytes(client))
    return run


def read_back(url: str, run: Run) -> tuple[int, int]:
    """(lost, changed): acknowledged writes the API has no codes for, or other codes."""
    lost = changed = 0
    ids = list(run.acked)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            got = c.post("/v1/codes:batchGet", json={"ids": chunk})
            got.raise_for_status()
            for item_id, codes in zip(chunk, got.json()["items"], strict=True):
                want = run.acked[item_id]
                if codes is None:
                    lost += 1
                elif any(codes[k] != want[k] for k in ("vq", "rq", "suffix", "sid")):
                    changed += 1
    return lost, changed


def p99_ms(answers: list[Answer]) -> float | None:
    if not answers:
        return None
    return float(np.percentile([1000 * (a.end - a.start) for a in answers], 99))


def in_window(answer: Answer, windows: list[tuple[str, float, float]], kind: str) -> bool:
    return any(w == kind and start <= answer.start <= end for w, start, end in windows)


def report(run: Run, lost: int, changed: int, args: argparse.Namespace) -> dict[str, Any]:
    reads = [a for a in run.answers if a.op in ("read", "batch_read") and a.status != 0]
    faulty = {
        a
        for a in reads
        if in_window(a, run.windows, "redis") or in_window(a, run.windows, "reload")
    }
    server_errors = [a for a in run.answers if a.status >= 500 and a.status != 503]
    unavailable: dict[str, int] = {}
    for a in run.answers:
        if a.status == 503:
            unavailable[a.kind or "?"] = unavailable.get(a.kind or "?", 0) + 1
    writes = [a for a in run.answers if a.op == "write"]
    return {
        "seconds": args.time,
        "uploaders": args.uploaders,
        "batch": args.batch,
        "readers": args.readers,
        "requests": len(run.answers),
        "writes": len(writes),
        "writes_ok": sum(a.status == 200 for a in writes),
        "acknowledged_items": len(run.acked),
        "acknowledged_lost": lost,
        "acknowledged_changed": changed,
        "server_errors_not_503": len(server_errors),
        "server_error_statuses": sorted({a.status for a in server_errors}),
        "connections_failed": sum(a.status == 0 for a in run.answers),
        "unavailable_503_by_kind": unavailable,
        "reads_answered": len(reads),
        "read_p99_ms_outside_faults": p99_ms([a for a in reads if a not in faulty]),
        "read_p99_ms_redis_down": p99_ms([a for a in reads if in_window(a, run.windows, "redis")]),
        "read_p99_ms_reload": p99_ms([a for a in reads if in_window(a, run.windows, "reload")]),
        "first_write_after_restart_s": [round(s, 2) for s in run.recovery_s],
        "rss_mb_start": run.rss[0] / 2**20,
        "rss_mb_end": run.rss[-1] / 2**20,
        "rss_mb_peak": max(run.rss) / 2**20,
        "cores": os.cpu_count(),
    }


def print_table(out: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    rows = [
        [
            "load",
            f"{out['seconds']} s; {out['uploaders']} uploaders x {out['batch']} items, "
            f"{out['readers']} readers",
        ],
        [
            "requests (writes answered 200)",
            f"{out['requests']} ({out['writes_ok']} of {out['writes']})",
        ],
        ["acknowledged items", str(out["acknowledged_items"])],
        [
            "acknowledged items lost / changed",
            f"{out['acknowledged_lost']} / {out['acknowledged_changed']}",
        ],
        ["5xx other than 503", str(out["server_errors_not_503"])],
        ["connections failed", str(out["connections_failed"])],
        [
            "503 by kind",
            ", ".join(f"{k} {v}" for k, v in sorted(out["unavailable_503_by_kind"].items())) or "-",
        ],
        ["read p99 ms: outside faults", ms(out["read_p99_ms_outside_faults"])],
        ["read p99 ms: Redis down (kill to ready + settle)", ms(out["read_p99_ms_redis_down"])],
        ["read p99 ms: reload", ms(out["read_p99_ms_reload"])],
        [
            "first write 200 after Redis restart (s)",
            ", ".join(f"{s:g}" for s in out["first_write_after_restart_s"]),
        ],
        [
            "service RSS MB: start / end / peak",
            f"{out['rss_mb_start']:.0f} / {out['rss_mb_end']:.0f} / {out['rss_mb_peak']:.0f}",
        ],
    ]
    print(table(["", "value"], rows, align="ll", pad=False))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    bundle = demo_bundle(args.bundle_root, args.catalog)
    args.results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qarm-soak-") as tmp:
        own = RedisServer(Path(tmp))
        own.start()
        url, proc = start_service(bundle, own.url, "qarm-soak", args.results / "soak-service.log")
        try:
            run = asyncio.run(soak(url, own, bundle, args))
            lost, changed = read_back(url, run)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            own.stop()
    out = report(run, lost, changed, args)
    (args.results / "soak.json").write_text(json.dumps(out, indent=2) + "\n")
    print()
    print_table(out)
    bad = out["acknowledged_lost"] + out["acknowledged_changed"] + out["server_errors_not_503"]
    return 1 if bad else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--time", type=int, default=600, help="seconds of load")
    parser.add_argument("--uploaders", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="items per upload")
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--known", type=int, default=1024, help="items posted before the run")
    parser.add_argument("--down", type=float, default=8.0, help="seconds Redis stays dead")
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds a fault window lasts after the fault has passed",
    )
    parser.add_argument("--catalog", type=int, default=20000, help="items of the demo bundle")
    parser.add_argument(
        "--bundle-root", type=Path, default=ROOT / "data" / "loadtest" / "artifacts"
    )
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
