"""The service under load, driven from this (second) process: encode and batchGet throughput.

    python -m bench.service --redis-url redis://127.0.0.1:6379/14 [--bundle PATH] [--items N]

Starts `python -m service` on the Redis at --redis-url (a key prefix of its own, deleted at
the end) with the newest bundle under artifacts/ (or --bundle), then measures, over bare
keep-alive HTTP/1.1 connections from here (httpx costs more client CPU than the service
spends on a request):
- POST /v1/items, one item per request, at concurrency 1 and 32: items/s, p50/p99 latency;
  divided by the raw encoder+quantizer items/s of this process at the service's mean batch size
  (read from its batch-size histogram);
- POST /v1/codes:batchGet of 100 ids at concurrency 32: requests/s, p50/p99; divided by raw
  `MGET` of the same 100 keys through redis-py asyncio at the same concurrency;
- GET /healthz at concurrency 32: the ceiling of this client against a route that does nothing.
Items are text when the bundle has an encoder, embeddings otherwise (the table says which).
Prints a markdown table and writes JSON to bench/results/service.json. Not a test: numbers
depend on the machine, which the JSON records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bench.machine import machine
from codebooks import latest_bundle
from codebooks.summary import table
from runtime import Engine
from service.launch import free_port, wait_ready
from service.prepare import prepare_request
from service.schemas import ItemIn
from store.redis_store import Keys


class Connection:
    """A bare HTTP/1.1 keep-alive connection: far less client CPU per request than httpx, so
    that on a small machine the numbers measure the service rather than the client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: qarm\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


async def drive(
    call: Callable[[int, int], Awaitable[None]], total: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run `call(worker, i)` for i < total with `concurrency` workers; (seconds, latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(w: int) -> None:
        for i in counter:
            start = time.perf_counter()
            await call(w, i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.perf_counter() - start, latencies


def sample_items(engine: Engine, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    if engine.encoder is not None:
        words = ["red", "blue", "cat", "dog", "song", "dance", "night", "city", "music"]
        return [
            {"id": f"b{seed}-{i}", "text": " ".join(rng.choice(words, size=6))} for i in range(n)
        ]
    x = rng.standard_normal((n, engine.dim)).astype(np.float32)
    return [{"id": f"b{seed}-{i}", "embedding": x[i].tolist()} for i in range(n)]


def raw_items_per_s(engine: Engine, items: list[dict[str, Any]], batch: int) -> float:
    """Encoder + quantizer in this process, on prepared items, `batch` at a time: the best of
    three runs of >= 1 s (the machine is shared; the best run is the least disturbed)."""
    (prepared,) = prepare_request(
        [engine], [ItemIn(**it) for it in items], max_pixels=sys.maxsize, deadline=math.inf
    )
    engine.encode(prepared[:batch])  # warm-up
    best = 0.0
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while done < len(prepared) or time.perf_counter() - start < 1.0:
            engine.encode([prepared[(done + j) % len(prepared)] for j in range(batch)])
            done += batch
        best = max(best, done / (time.perf_counter() - start))
    return best


def metric(text: str, name: str) -> float:
    """The unlabelled sample `name` of a Prometheus text page (e.g. a histogram's `_count`);
    0.0 when the page has none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return 0.0


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start the service, measure every row, stop it (its Redis keys deleted); the result."""
    bundle_path = args.bundle or latest_bundle(args.artifacts)
    engine = Engine.load(bundle_path)
    prefix = f"qarmbench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = start_service(bundle_path, port, prefix, args)
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", proc)
        rows = await measure(engine, port, prefix, args)
    finally:
        stop_service(proc, args.redis_url, prefix)
    return bench_result(engine, args, rows)


def start_service(
    bundle_path: Path, port: int, prefix: str, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    """`python -m service` on `port`, keys under `prefix`, no catalog seeded: every key it
    writes is this run's."""
    env = {
        **os.environ,
        "QARM_REDIS_URL": args.redis_url,
        "QARM_REDIS_PREFIX": prefix,
        "QARM_LOG_LEVEL": "WARNING",
        "QARM_MAX_BATCH": str(args.max_batch),
        "QARM_MAX_WAIT_MS": str(args.max_wait_ms),
        "QARM_SEED_CATALOG": "false",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--bundle", str(bundle_path)],
        env=env,
    )


def stop_service(proc: subprocess.Popen[bytes], redis_url: str, prefix: str) -> None:
    """SIGTERM the service and delete every key of this run."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.unlink(key)
    r.close()


async def measure(
    engine: Engine, port: int, prefix: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The table's rows, in order: writes at concurrency 1 and 32, batchGet (of the items the
    second wrote), healthz; over 32 keep-alive connections."""
    conns = [await Connection.open(port) for _ in range(32)]
    rows = [await measure_items(engine, conns, args.items // 8, concurrency=1)]
    rows.append(await measure_items(engine, conns, args.items, concurrency=32))
    version = json.loads(await get_text(conns[0], "/readyz"))["bundle_version"]
    rows.append(await measure_batch_get(conns, args, Keys(prefix), version))
    rows.append(await measure_healthz(conns, args.requests))
    for conn in conns:
        await conn.close()
    return rows


async def get_text(conn: Connection, path: str) -> str:
    status, body = await conn.request("GET", path)
    assert status == 200, (path, status, body[:200])
    return body.decode()


def checked(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"service answered {status}: {body[:300]!r}")


async def measure_items(
    engine: Engine, conns: list[Connection], n: int, concurrency: int
) -> dict[str, Any]:
    """POST /v1/items of `n` items, one per request; the baseline is the raw encoder and
    quantizer at the mean batch size the service formed (from its batch-size histogram)."""
    items = sample_items(engine, n, seed=concurrency)
    bodies = [json.dumps({"items": [item]}).encode() for item in items]
    before = await get_text(conns[0], "/metrics")

    async def post(w: int, i: int) -> None:
        checked(*await conns[w].request("POST", "/v1/items", bodies[i]))

    seconds, lat = await drive(post, n, concurrency)
    after = await get_text(conns[0], "/metrics")
    batches = metric(after, "qarm_batch_size_items_count") - metric(
        before, "qarm_batch_size_items_count"
    )
    mean_batch = max(1, round(n / max(batches, 1)))
    raw = raw_items_per_s(engine, items[: max(256, mean_batch)], mean_batch)
    p50, p99 = percentiles(lat)
    return {
        "what": f"POST /v1/items, 1 item/request, concurrency {concurrency}",
        "per_s": n / seconds,
        "unit": "items/s",
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_batch": n / max(batches, 1),
        "baseline": f"raw encoder+quantizer, batch {mean_batch}",
        "baseline_per_s": raw,
    }


async def measure_batch_get(
    conns: list[Connection], args: argparse.Namespace, keys: Keys, version: str
) -> dict[str, Any]:
    """POST /v1/codes:batchGet of 100 ids written at concurrency 32, against raw MGET of the
    same records read as docs/store.md tells a direct reader (one pipeline of HGETs); both
    warmed first."""
    ids = [f"b32-{i}" for i in range(args.items)]
    rng = np.random.default_rng(0)
    queries = [list(rng.choice(ids, size=100, replace=False)) for _ in range(64)]
    query_bodies = [json.dumps({"ids": q}).encode() for q in queries]

    async def batch_get(w: int, i: int) -> None:
        status, body = await conns[w].request("POST", "/v1/codes:batchGet", query_bodies[i % 64])
        checked(status, body)

    raw_client = aioredis.Redis.from_url(args.redis_url, max_connections=64)
    key_lists = [[(keys.items(version, i), i) for i in q] for q in queries]

    async def mget(_: int, i: int) -> None:
        pipe = raw_client.pipeline(transaction=False)
        for key, field in key_lists[i % 64]:
            pipe.hget(key, field)
        values = await pipe.execute()
        assert all(v is not None for v in values)

    await drive(batch_get, 64, 32)  # warm-up
    await drive(mget, 64, 32)
    seconds, lat = await drive(batch_get, args.requests, 32)
    raw_seconds, raw_lat = await drive(mget, args.requests, 32)
    await raw_client.aclose()
    p50, p99 = percentiles(lat)
    return {
        "what": "POST /v1/codes:batchGet, 100 ids, concurrency 32",
        "per_s": args.requests / seconds,
        "unit": "requests/s",
        "p50_ms": p50,
        "p99_ms": p99,
        "baseline": "raw pipelined HGET of the same 100 records (redis-py asyncio)",
        "baseline_per_s": args.requests / raw_seconds,
        "baseline_p50_ms": percentiles(raw_lat)[0],
        "baseline_p99_ms": percentiles(raw_lat)[1],
    }


async def measure_healthz(conns: list[Connection], requests: int) -> dict[str, Any]:
    """GET /healthz: the ceiling of this client against a route that does nothing."""

    async def healthz(w: int, _: int) -> None:
        checked(*await conns[w].request("GET", "/healthz"))

    seconds, lat = await drive(healthz, requests, 32)
    p50, p99 = percentiles(lat)
    return {
        "what": "GET /healthz (no work), concurrency 32",
        "per_s": requests / seconds,
        "unit": "requests/s",
        "p50_ms": p50,
        "p99_ms": p99,
        "baseline": "",
        "baseline_per_s": None,
    }


def bench_result(
    engine: Engine, args: argparse.Namespace, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """bench/results/service.json: the rows, and the machine, bundle and settings they ran on."""
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "bundle": {
            "version": engine.version,
            "n_items": engine.bundle.manifest.n_items,
            "dim": engine.dim,
            "k": engine.quantizer.k,
            "levels": engine.levels,
            "vq_index": engine.bundle.manifest.vq.kind,
        },
        "items_sent_as": "text (encoder)"
        if engine.encoder is not None
        else "embedding (no encoder)",
        "settings": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    headers = ["measurement", "result", "p50 ms", "p99 ms", "baseline", "baseline result", "ratio"]
    rows = []
    for row in result["rows"]:
        base = row["baseline_per_s"]
        rows.append(
            [
                row["what"],
                f"{row['per_s']:,.0f} {row['unit']}",
                f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                row["baseline"],
                f"{base:,.0f} {row['unit']}" if base else "",
                f"{row['per_s'] / base:.2f}" if base else "",
            ]
        )
    return table(headers, rows, align="lrrrlrr", pad=False)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--items", type=int, default=4096, help="items posted at concurrency 32")
    parser.add_argument("--requests", type=int, default=2000, help="batchGet/healthz requests")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    b = result["bundle"]
    print(
        f"bundle {b['version']}: N={b['n_items']} d={b['dim']} K={b['k']} L={b['levels']} "
        f"VQ {b['vq_index']}; items sent as {result['items_sent_as']}; "
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores"
    )
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
