"""The HTTP read path against direct Redis reads, measured the same way in the same run.

    python -m bench.reads [--items 100000] [--seconds 20] [--concurrency 16] [--rate 1000]

One Node client (bench/reads.mjs, no dependencies) reads batches of 100 random ids: straight
from Redis as docs/store.md tells a reader in another language (one pipeline of HGETs,
values decoded), then through `POST /v1/codes:batchGet` of a `python -m service` process on
the same Redis. Each first at full speed (CONCURRENCY calls in flight), then at a fixed RATE
of calls per second for the latency. The items are written once through the store under the
service's active version (any codes do: the read path does not look at them). Prints a
markdown table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from bench.codebooks import machine
from bench.machine import save_rows
from codebooks import latest_bundle, load_bundle
from codebooks.build import BuildConfig, build
from codebooks.clustered import clustered_embeddings
from codebooks.summary import table
from service.launch import free_port, wait_ready
from store import CatalogSeed, NewCodes, RedisStore

HERE = Path(__file__).resolve().parent
TOKEN = f"bench-{uuid.uuid4().hex}"


def reads_bundle(root: Path, n_items: int = 20_000) -> Path:
    """The newest bundle under `root`, built first if there is none: synthetic embeddings, no
    encoder (the run writes its items through the store, never through the encoder)."""
    if root.exists() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return latest_bundle(root)
    catalog = clustered_embeddings(n_items, 64, seed=0)
    return build(catalog.ids, catalog.embeddings, BuildConfig(gpu="off", seed=0), root)


def start_service(bundle: Path, redis_url: str, prefix: str, log: Path) -> tuple[str, Any]:
    """`python -m service` on a free port with one read token; its log goes to `log`."""
    port = free_port()
    env = {
        **os.environ,
        "QARM_REDIS_URL": redis_url,
        "QARM_REDIS_PREFIX": prefix,
        "QARM_TOKENS": json.dumps([{"name": "bench", "token": TOKEN, "scopes": ["read"]}]),
        "QARM_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--bundle", str(bundle)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


async def write_items(url: str, prefix: str, version: str, bundle: Path, n: int) -> list[str]:
    b = load_bundle(bundle)
    m = b.manifest
    rng = np.random.default_rng(0)
    ids = [f"read-{i:07d}" for i in range(n)]
    store = RedisStore(url, prefix=prefix, pool_size=4, timeout_s=30.0)
    store.attach(version, CatalogSeed.of(b))
    try:
        for start in range(0, n, 1000):
            batch = [
                NewCodes(
                    i,
                    tuple(rng.integers(0, m.n_items, size=m.k).tolist()),
                    tuple(rng.integers(0, m.centroids, size=m.levels).tolist()),
                )
                for i in ids[start : start + 1000]
            ]
            await store.write(version, batch)
    finally:
        await store.close()
    return ids


def node(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(HERE / "reads.mjs"), *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    prefix = f"qarmbench-{uuid.uuid4().hex[:8]}"
    bundle = reads_bundle(Path(args.bundles))
    client = redis.Redis.from_url(args.redis_url)
    host = client.connection_pool.connection_kwargs["host"]
    port = str(client.connection_pool.connection_kwargs["port"])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url, proc = start_service(bundle, args.redis_url, prefix, Path(tmp) / "service.log")
        try:
            version = httpx.get(f"{url}/readyz").json()["bundle_version"]
            ids = asyncio.run(write_items(args.redis_url, prefix, version, bundle, args.items))
            ids_file = Path(tmp) / "ids.txt"
            ids_file.write_text("\n".join(ids))
            common = [str(ids_file), str(args.concurrency), str(args.seconds)]
            for rate in ("0", str(args.rate)):
                direct = node("redis", host, port, prefix, version, *common, rate)
                api = node("http", url, TOKEN, *common, rate)
                for r in (direct, api):
                    r["rate"] = int(rate) or "max"
                    r["vs_direct"] = round(r["ids_per_s"] / direct["ids_per_s"], 3)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.unlink(key)
            client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bundles", default="data/bench-reads/bundles")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=1000, help="calls/s of the latency runs")
    args = parser.parse_args()
    rows = run(args)
    headers = ["mode", "rate", "calls_per_s", "ids_per_s", "vs_direct", "p50_ms", "p99_ms"]
    print(table(headers, [[r[h] for h in headers] for r in rows]))
    out = save_rows("reads", rows, machine())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
