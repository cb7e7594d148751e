"""Codebook build time, encode throughput and VQ recall, exact vs IVF, at 100k and 1M items.

    python -m bench.codebooks [--sizes 100000 1000000] [--dim 64] [--batch 256]

Queries are new items drawn from the same clustered distribution as the catalog but not in it
(what the service sees: new uploads). Recall@K is measured against the exact flat
index of the same catalog. Prints a markdown table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.machine import machine as host
from codebooks.build import BuildConfig, build
from codebooks.bundle import load_bundle
from codebooks.clustered import clustered_embeddings
from codebooks.device import gpu_count
from codebooks.quantizer import Quantizer
from codebooks.rq import rq_encode
from codebooks.summary import table
from codebooks.vq import recall_at_k, search


def machine() -> dict[str, Any]:
    return {
        **host(),
        "omp_threads": faiss.omp_get_max_threads(),
        "gpus": gpu_count(),
        "faiss": faiss.__version__,
    }


def items_per_s(
    encode: Callable[[np.ndarray], object], batches: list[np.ndarray], min_seconds: float = 3.0
) -> float:
    """Items/s of `encode` over `batches`, repeated until `min_seconds` have passed."""
    encode(batches[0])  # warm-up
    done, i, start = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        encode(batches[i % len(batches)])
        done, i = done + len(batches[i % len(batches)]), i + 1
    return done / elapsed


def throughput(quantizer: Quantizer, queries: np.ndarray, batch: int) -> dict[str, float]:
    """Items/s of Quantizer.encode (VQ top-K + RQ) at `batch`, and of each half alone."""
    batches = [queries[i : i + batch] for i in range(0, len(queries) - batch + 1, batch)]
    index, books, k = quantizer.bundle.vq_index, quantizer.bundle.rq, quantizer.k
    return {
        "encode_items_per_s": items_per_s(quantizer.encode, batches),
        "vq_items_per_s": items_per_s(lambda b: search(index, b, k), batches),
        "rq_items_per_s": items_per_s(lambda b: rq_encode(b, books), batches),
    }


def run(sizes: list[int], dim: int, batch: int, queries_n: int, out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        drawn = clustered_embeddings(n + queries_n, dim, seed=0)  # one distribution, split in two
        ids, catalog, queries = drawn.ids[:n], drawn.embeddings[:n], drawn.embeddings[n:]
        truth: np.ndarray | None = None
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("flat", "ivf"):
                config = BuildConfig(vq_index=kind, gpu="off")
                start = time.perf_counter()
                path = build(ids, catalog, config, Path(tmp) / kind)
                build_s = time.perf_counter() - start
                bundle = load_bundle(path)
                quantizer = Quantizer(bundle, gpu="off")
                found, _ = quantizer.encode(queries)
                if kind == "flat":
                    truth = found
                assert truth is not None
                speed = throughput(quantizer, queries, batch)
                m = bundle.manifest
                rows.append(
                    {
                        "items": n,
                        "dim": dim,
                        "index": kind,
                        "nlist": m.vq.nlist,
                        "nprobe": m.vq.nprobe,
                        "build_s": build_s,
                        "stage_s": m.metrics.seconds,
                        "batch": batch,
                        **speed,
                        "recall_at_25_new_items": recall_at_k(found, truth),
                        "recall_at_25_build_sample": m.vq.recall_at_k,
                        "final_mse": m.metrics.levels[-1].mse,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "codebooks.json").write_text(json.dumps(report, indent=2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    print(json.dumps(machine()))
    rows = run(args.sizes, args.dim, args.batch, args.queries, args.out)
    print(
        table(
            [
                "items",
                "index",
                "nprobe/nlist",
                "build s",
                "encode items/s (VQ+RQ)",
                "VQ items/s",
                "RQ items/s",
                "recall@25 new items",
                "recall@25 build sample",
            ],
            [
                [
                    r["items"],
                    r["index"],
                    "-" if r["nprobe"] is None else f"{r['nprobe']}/{r['nlist']}",
                    r["build_s"],
                    round(r["encode_items_per_s"]),
                    round(r["vq_items_per_s"]),
                    round(r["rq_items_per_s"]),
                    r["recall_at_25_new_items"],
                    r["recall_at_25_build_sample"],
                ]
                for r in rows
            ],
        )
    )
    print(f"JSON: {args.out / 'codebooks.json'}")


if __name__ == "__main__":
    main()
