"""Redis memory per item at scale, split by key kind, for the store's layout (docs/store.md).

    python -m bench.store [--items 1000000] [--new-share 0.1] [--id-chars 12]

A fresh `redis-server` per Redis configuration (the default one, then hashes kept compact up
to the item value's size) on a free local port. The items are the clustered synthetic
catalog: RQ codebooks (L=6, Nc=256) trained on a sample, every item encoded; a share of them
is the bundle's catalog (staged, then written as the backfill writes them, keeping their build
suffixes), the rest are posted as new items (their suffixes come from the counters). VQ codes
are random row ids (their bytes are the same size whatever they hold). Reports `used_memory`
before and after, and `MEMORY USAGE` summed per key kind. Prints a markdown table and writes
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import redis
from tqdm import tqdm

from bench.codebooks import machine
from bench.machine import save_rows
from codebooks.clustered import clustered_embeddings
from codebooks.rq import rq_encode
from codebooks.rq_train import train_residual_kmeans
from codebooks.sid import assign_suffixes
from codebooks.summary import table
from service.launch import free_port
from store import CatalogSeed, NewCodes, RedisStore

LEVELS, CENTROIDS, K, DIM = 6, 256, 25, 64
WRITE_BATCH = 1000
VERSION = "20261130T000000Z-0badcafe"  # a bundle version's length, as in production
KINDS = {"i": "item records", "x": "semantic-ID entries", "c": "suffix counters", "r": "row map"}

# Redis configurations compared: the default, and the one docs/store.md recommends: hashes
# kept in their compact encoding (listpack) up to the item value's size (8 + 2L + 4K = 120
# bytes at L=6, K=25), and sorted sets up to 1,024 entries (RQ prefixes are far from uniform).
CONFIGS: dict[str, list[str]] = {
    "default": [],
    "recommended": ["--hash-max-listpack-value", "128", "--zset-max-listpack-entries", "1024"],
}


@contextmanager
def redis_server(args: list[str]) -> Iterator[redis.Redis]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp, *args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield client
        finally:
            client.close()
            proc.terminate()
            proc.wait()


def items(n: int, id_chars: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`n` ids of `id_chars` characters and their RQ codes from codebooks trained on a sample."""
    emb = clustered_embeddings(n, DIM, seed=seed).embeddings
    rng = np.random.default_rng(seed)
    sample = emb[rng.choice(n, size=min(n, 100_000), replace=False)]
    books = train_residual_kmeans(sample, LEVELS, CENTROIDS, seed=seed, progress=True)
    codes = np.concatenate(
        [rq_encode(emb[s : s + 100_000], books).codes for s in range(0, n, 100_000)]
    )
    ids = [f"item-{i:0{id_chars - 5}d}" for i in range(n)]
    return ids, codes


async def fill(url: str, ids: list[str], codes: np.ndarray, n_catalog: int) -> float:
    """Stage the catalog, write it as the backfill does, post the rest; answers seconds."""
    rng = np.random.default_rng(1)
    catalog_codes = codes[:n_catalog]
    suffixes = assign_suffixes(catalog_codes)
    seed = CatalogSeed(np.array(ids[:n_catalog]), catalog_codes, suffixes, CENTROIDS, K, DIM)
    store = RedisStore(url, prefix="qarm", pool_size=8, timeout_s=60.0)
    start = time.perf_counter()
    try:
        await store.stage(VERSION, "/bundles/bench", seed)
        for s in tqdm(range(0, len(ids), WRITE_BATCH), desc="write", unit="batch"):
            batch = []
            for i in range(s, min(s + WRITE_BATCH, len(ids))):
                rq = tuple(codes[i].tolist())
                vq = tuple(rng.integers(0, n_catalog, size=K).tolist())
                catalog = (rq, int(suffixes[i])) if i < n_catalog else None
                batch.append(NewCodes(ids[i], vq, rq, catalog))
            await store.write(VERSION, batch)
        await store.promote(VERSION, "/bundles/bench")
    finally:
        await store.close()
    return time.perf_counter() - start


def split(client: redis.Redis, n: int) -> tuple[dict[str, float], Counter[str]]:
    """Bytes per item by key kind (`MEMORY USAGE ... SAMPLES 0`), and the keys' encodings."""
    by_kind: Counter[str] = Counter()
    encodings: Counter[str] = Counter()
    for key in client.scan_iter(match=f"qarm:{VERSION}:*", count=10_000):
        kind = key.decode().split(":")[2]
        by_kind[kind] += int(client.memory_usage(key, samples=0) or 0)
        if kind in ("i", "x") and sum(encodings.values()) < 20_000:
            encodings[f"{kind}:{client.object('encoding', key).decode()}"] += 1
    return {KINDS.get(k, k): v / n for k, v in by_kind.items()}, encodings


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ids, codes = items(args.items, args.id_chars, args.seed)
    n_catalog = round(args.items * (1 - args.new_share))
    rows = []
    for name, config in CONFIGS.items():
        with redis_server(config) as client:
            before = int(client.info("memory")["used_memory"])
            url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
            seconds = asyncio.run(fill(url, ids, codes, n_catalog))
            after = int(client.info("memory")["used_memory"])
            kinds, encodings = split(client, args.items)
        row: dict[str, Any] = {
            "config": name,
            "items": args.items,
            "catalog": n_catalog,
            "id_chars": args.id_chars,
            "bytes_per_item": (after - before) / args.items,
            **{f"{k} B/item": round(v, 1) for k, v in sorted(kinds.items())},
            "encodings": dict(encodings),
            "write_s": round(seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--new-share", type=float, default=0.1, help="items posted, not catalog")
    parser.add_argument("--id-chars", type=int, default=12, help="characters per item id")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = run(args)
    headers = [k for k in rows[0] if k != "encodings"]
    print(table(headers, [[r.get(h, "") for h in headers] for r in rows]))
    out = save_rows("store", rows, machine())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
