"""The backfill on Ray Data against a plain single-process loop doing the same work.

`python -m bench.backfill [--items N] [--text-items N] [--redis-url URL]` (`make bench-backfill`):

1. **Embeddings**: a bundle without an encoder over `--catalog` synthetic items (the paper's
   K=25, L=6, Nc=256, d=64), and a Parquet export of `--items` synthetic embeddings. The same
   work twice, each into Redis under a key prefix of its own: a plain loop in this process
   (pyarrow batches -> runtime.Engine -> store writes), then `backfill.job.run_backfill` on a
   local Ray with the machine's cores. Both write the bundle's own catalog first, untimed;
   the export is what is timed (for Ray, with its pipeline's start-up).
   Peak memory: this process's peak RSS for the loop; for the Ray run, the peak of this
   process's RSS plus every Ray process's RSS, sampled every 0.5 s (RSS counts shared pages
   once per process, so it overstates).
2. **Text through the real encoder**: the newest bundle under `--artifacts` with an encoder
   (`make artifacts`), `--text-items` texts; the encoder's raw items/s (Engine.encode on
   prepared items in this process) against the backfill's items/s on the same export.

Prints a table and writes bench/results/backfill.json. Not a test: numbers depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from backfill.cluster import ray_session
from backfill.job import plan, run_backfill
from backfill.settings import BackfillSettings
from bench.machine import machine
from codebooks import latest_bundle, load_bundle
from codebooks.build import BuildConfig, build
from codebooks.clustered import clustered_embeddings
from codebooks.summary import table
from runtime import Engine, EngineOptions, RawItem
from store import CatalogSeed, NewCodes, RedisStore, Store

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "red", "blue", "cat", "dog", "song", "dance", "night",
    "city", "music", "summer", "rain", "story", "game", "cook",
)  # fmt: skip


def embedding_export(path: Path, n: int, dim: int, seed: int) -> None:
    """`n` rows of (id, embedding) near the catalog's clusters, written in row groups."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, 100_000):
        rows = min(100_000, n - start)
        x = clustered_embeddings(rows, dim, seed=seed + start).embeddings
        x = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
        table = pa.table(
            {
                "id": [f"new-{i}" for i in range(start, start + rows)],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def text_export(path: Path, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(n)]
    pq.write_table(pa.table({"id": [f"text-{i}" for i in range(n)], "text": texts}), path)
    return texts


async def plain_catalog(store: Store, engine: Engine, write: int) -> int:
    """What the backfill does first, in one process: stage, then the bundle's catalog."""
    b = engine.bundle
    version = engine.version
    await store.stage(version, str(b.path), CatalogSeed.of(b))
    written = 0
    for start in range(0, b.manifest.n_items, write):
        stop = min(start + write, b.manifest.n_items)
        encoded, suffixes = engine.catalog_rows(start, stop)
        codes = [
            NewCodes(str(b.item_ids[start + i]), tuple(v), tuple(q), (tuple(q), int(s)))
            for i, (v, q, s) in enumerate(
                zip(encoded.vq.tolist(), encoded.rq.tolist(), suffixes.tolist(), strict=True)
            )
        ]
        written += len(await store.write(version, codes))
    return written


async def plain_export(store: Store, engine: Engine, export: Path, batch: int, write: int) -> int:
    """What the backfill does with an export, in one process: skip stored ids, prepare,
    encode, write. Answers the items written."""
    written = 0
    for record in pq.ParquetFile(export).iter_batches(batch_size=write):
        columns = record.to_pydict()
        stored = await store.get_many(engine.version, columns["id"])
        todo = [i for i, value in enumerate(stored) if value is None]
        prepared = [engine.prepare(raw_item(columns, i)) for i in todo]
        codes = []
        for start in range(0, len(prepared), batch):
            part = prepared[start : start + batch]
            encoded = engine.encode(part)
            codes += [
                NewCodes(p.item_id, tuple(v), tuple(q), engine.catalog_entry(p.item_id))
                for p, v, q in zip(part, encoded.vq.tolist(), encoded.rq.tolist(), strict=True)
            ]
        written += len(await store.write(engine.version, codes))
    return written


def raw_item(columns: dict[str, list[Any]], i: int) -> RawItem:
    embedding = columns.get("embedding", [None] * (i + 1))[i]
    return RawItem(
        id=columns["id"][i],
        text=columns.get("text", [None] * (i + 1))[i],
        embedding=np.asarray(embedding, dtype=np.float32) if embedding is not None else None,
    )


class PeakMemory:
    """The peak of this process's RSS plus every Ray process's, sampled every 0.5 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.5):
            total = me.memory_info().rss
            for p in psutil.process_iter(["name", "cmdline", "memory_info"]):
                line = " ".join(p.info["cmdline"] or [])
                if p.pid != me.pid and ("ray::" in (p.info["name"] or "") or "/ray/" in line):
                    total += p.info["memory_info"].rss if p.info["memory_info"] else 0
            self.peak = max(self.peak, total)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def open_redis(url: str, prefix: str) -> RedisStore:
    return RedisStore(url, prefix=prefix, pool_size=16, timeout_s=30.0)


def drop(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        keys.append(key)
        if len(keys) >= 10_000:
            client.unlink(*keys)
            keys = []
    if keys:
        client.unlink(*keys)
    client.close()


async def compare(
    bundle: Path, export: Path, items: int, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """The plain loop, then the backfill on Ray, over the same bundle and export. Both first
    write the bundle's catalog (not timed); the export is timed, the Ray run's pipeline
    start-up included (a run that finds the catalog stored skips it)."""
    engine = Engine.load(bundle, EngineOptions(execution_provider="cpu"))
    prefix = f"qarmbench-{uuid.uuid4().hex[:8]}"
    store = open_redis(args.redis_url, f"{prefix}-plain")
    try:
        await plain_catalog(store, engine, args.write_batch)
        start = time.perf_counter()
        written = await plain_export(store, engine, export, args.batch_size, args.write_batch)
        plain_s = time.perf_counter() - start
    finally:
        await store.close()
        drop(args.redis_url, f"{prefix}-plain")
    plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert written == items, f"the plain loop wrote {written} of {items}"

    settings = BackfillSettings(
        redis_url=args.redis_url,
        redis_prefix=f"{prefix}-ray",
        wait_pods_s=0,
        batch_size=args.batch_size,
        write_batch=args.write_batch,
    )
    store = open_redis(args.redis_url, f"{prefix}-ray")
    peak = PeakMemory()
    try:
        with ray_session(settings), peak.sampling():
            await run_backfill(store, settings, plan(bundle, []))
            start = time.perf_counter()
            report = await run_backfill(store, settings, plan(bundle, [str(export)]))
            ray_s = time.perf_counter() - start
    finally:
        await store.close()
        drop(args.redis_url, f"{prefix}-ray")
    assert report.written == items, report
    assert report.failed == 0, report
    row = {
        "work": label,
        "items": items,
        "plain_s": round(plain_s, 1),
        "plain_items_per_s": round(items / plain_s),
        "plain_peak_rss_mb": round(plain_rss / 2**20),
        "ray_s": round(ray_s, 1),
        "ray_items_per_s": round(items / ray_s),
        "ray_peak_rss_mb": round(peak.peak / 2**20),
        "ray_over_plain": round(plain_s / ray_s, 2),
    }
    print(json.dumps(row))
    return row


def raw_encoder_items_per_s(bundle: Path, texts: list[str], batch: int) -> float:
    """The encoder and quantizer alone, in this process, on prepared text items."""
    engine = Engine.load(bundle, EngineOptions(execution_provider="cpu"))
    prepared = [engine.prepare(RawItem(id=f"t{i}", text=t)) for i, t in enumerate(texts)]
    engine.encode(prepared[:batch])  # warm-up
    start = time.perf_counter()
    for s in range(0, len(prepared), batch):
        engine.encode(prepared[s : s + batch])
    return len(prepared) / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.items:
        catalog = clustered_embeddings(args.catalog, 64, seed=0)
        root = work / f"artifacts-{args.catalog}"
        bundle = latest_bundle(root) if root.exists() else None
        if bundle is None:
            print(f"building a bundle of {args.catalog} synthetic items (no encoder) ...")
            bundle = build(catalog.ids, catalog.embeddings, BuildConfig(gpu="off"), root)
        export = work / f"embeddings-{args.items}.parquet"
        if not export.exists():
            print(f"writing {args.items} embeddings to {export} ...")
            embedding_export(export, args.items, 64, seed=1)
        rows.append(await compare(bundle, export, args.items, args, "embeddings"))
    raw = None
    if args.text_items:
        bundle = latest_bundle(args.artifacts)
        if load_bundle(bundle).manifest.encoder is None:
            raise SystemExit(f"{bundle} has no encoder: run `make artifacts` first")
        export = work / f"texts-{args.text_items}.parquet"
        texts = text_export(export, args.text_items, seed=2)
        raw = raw_encoder_items_per_s(bundle, texts, args.batch_size)
        print(f"raw encoder + quantizer: {raw:.0f} items/s")
        rows.append(await compare(bundle, export, args.text_items, args, "text, real encoder"))
    headers = ["work", "items", "plain items/s", "Ray items/s", "Ray / plain", "peak RSS (MB)"]
    keys = ["work", "items", "plain_items_per_s", "ray_items_per_s", "ray_over_plain"]
    cells = [
        [*(r[k] for k in keys), f"{r['plain_peak_rss_mb']}, {r['ray_peak_rss_mb']}"] for r in rows
    ]
    print("\n" + table(headers, cells, align="lrrrrr", pad=False))
    if raw is not None:
        print(f"\nraw encoder + quantizer on the text items: {raw:.0f} items/s")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": machine(), "rows": rows, "raw_text_items_per_s": raw}
    (RESULTS / "backfill.json").write_text(json.dumps(out, indent=2) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000, help="embeddings (0: skip)")
    parser.add_argument("--catalog", type=int, default=20_000, help="items of the bundle")
    parser.add_argument("--text-items", type=int, default=20_000, help="texts (0: skip)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--write-batch", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("data/bench-backfill"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
