"""VQ indexes at 1M items, side by side in one run: flat, IVF, HNSW, IVF-SQ8, IVF-PQ, `auto`.

    python -m bench.vq [--items 1000000] [--queries 2000] [--target 0.98] [--sets hard synthetic]

Two catalogs, each with its own new queries (never catalog rows):
- `hard`: a real embedding table the project already ships, MiniLM's word-piece embeddings
  (the [bracketed] special tokens dropped, PCA to 64-d), each row repeated with noise so
  neighbourhoods overlap; queries are new noisy copies, as near-duplicate uploads are.
- `synthetic`: the clustered catalog the demo uses; queries are new draws from it.

Each index is built by `codebooks.vq.build_vq_index` as a bundle build would (tuned to
`--target` on held-out catalog rows) and then measured on the new queries: recall@25 against
exact search, queries/s (search and exact re-rank, batches of 256, every core), build seconds
and bytes per item. Beside the build's own estimate stands the one measured the old way
(catalog rows searched while inside the index, leaving themselves out). HNSW is also swept
over efSearch, to find the least efSearch that reaches the target on the new queries.
Prints markdown tables and writes JSON to bench/results/vq.json.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.machine import machine as host
from codebooks.clustered import clustered_embeddings, near_duplicates
from codebooks.embeddings import Float32Array
from codebooks.summary import table, vq_setting
from codebooks.vq import (
    TIMING_BATCH,
    VQRequest,
    VQSettings,
    build_vq_index,
    default_shortlist,
    nearest,
    recall_at_k,
    search,
    set_search,
)

K = 25


def wordpiece_table(dim: int = 64) -> Float32Array:
    """MiniLM's word-piece embeddings without the [special] tokens, PCA to `dim`, normalised."""
    from safetensors.numpy import load_file

    from models.encoder import minilm_dir

    folder = minilm_dir()
    table_ = load_file(str(folder / "model.safetensors"))["embeddings.word_embeddings.weight"]
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    keep = np.array(sorted(i for token, i in vocab.items() if not token.startswith("[")))
    words = np.ascontiguousarray(table_[keep], dtype=np.float32)
    pca = faiss.PCAMatrix(words.shape[1], dim)
    pca.train(words)
    out: Float32Array = pca.apply(words)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def catalog(name: str, n: int, queries: int, noise: float) -> tuple[Float32Array, Float32Array]:
    """(catalog, new queries) of the named set."""
    if name == "hard":
        base = wordpiece_table()
        x, _ = near_duplicates(base, n, noise=noise, seed=0)
        q, _ = near_duplicates(base, queries, noise=noise, seed=1)
        return x, q
    drawn = clustered_embeddings(n + queries, 64, seed=0).embeddings
    return drawn[:n], drawn[n:]


def queries_per_s(index: Any, x: Float32Array, q: Float32Array, shortlist: int) -> float:
    """Search and exact re-rank of `q` in batches of TIMING_BATCH, over at least 2 seconds."""
    batches = [q[i : i + TIMING_BATCH] for i in range(0, len(q), TIMING_BATCH)]
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 2.0:
        for batch in batches:
            nearest(index, x.__getitem__, batch, K, shortlist)
            done += len(batch)
            if time.perf_counter() - start > 2.0:
                break
    return done / elapsed


def old_estimate(index: Any, x: Float32Array, shortlist: int, rows: int = 1000) -> float:
    """Recall@K of catalog rows searched while inside the index, each leaving itself out (how
    builds before this one estimated recall)."""
    rng = np.random.default_rng(7)
    sample = np.sort(rng.choice(len(x), rows, replace=False))
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    truth = _without(search(exact, x[sample], K + 1), sample)
    found = _without(nearest(index, x.__getitem__, x[sample], K + 1, shortlist + 1), sample)
    return recall_at_k(found, truth)


def _without(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.stack([ids[ids != row][:K] for ids, row in zip(found, rows, strict=True)])


def run_set(
    name: str,
    n: int,
    queries_n: int,
    noise: float,
    target: float,
    efs: list[int],
    kinds: list[VQRequest],
) -> list[dict[str, Any]]:
    x, q = catalog(name, n, queries_n, noise)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    start = time.perf_counter()
    truth = search(exact, q, K)
    flat_qps = len(q) / (time.perf_counter() - start)
    rows: list[dict[str, Any]] = [
        {
            "set": name,
            "index": "flat",
            "build_s": 0.0,
            "bytes_per_item": 4.0 * x.shape[1],
            "queries_per_s": flat_qps,
            "recall": 1.0,
            "estimate": None,
            "old_estimate": None,
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    settings = VQSettings(k=K, target_recall=target)
    for kind in kinds:
        start = time.perf_counter()
        index, info = build_vq_index(x, kind, settings)
        build_s = time.perf_counter() - start
        chosen = info.chosen
        shortlist = chosen.shortlist or default_shortlist(K, n)
        found = nearest(index, x.__getitem__, q, K, shortlist)
        rows.append(
            {
                "set": name,
                "index": f"{kind}: {vq_setting(chosen)}" if kind == "auto" else vq_setting(chosen),
                "build_s": build_s,
                "bytes_per_item": chosen.bytes_per_item,
                "queries_per_s": queries_per_s(index, x, q, shortlist),
                "recall": recall_at_k(found, truth),
                "estimate": chosen.recall_at_k,
                "old_estimate": old_estimate(index, x, shortlist),
                "candidates": [c.model_dump() for c in info.candidates],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if kind == "hnsw":
            for ef in efs:
                set_search(index, None, ef)
                found = nearest(index, x.__getitem__, q, K, shortlist)
                rows.append(
                    {
                        "set": name,
                        "index": f"hnsw{settings.hnsw_m} efSearch {ef} (sweep)",
                        "build_s": build_s,
                        "bytes_per_item": chosen.bytes_per_item,
                        "queries_per_s": queries_per_s(index, x, q, shortlist),
                        "recall": recall_at_k(found, truth),
                        "estimate": None,
                        "old_estimate": None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--noise", type=float, default=0.6, help="hard set: offset length")
    parser.add_argument("--sets", nargs="*", default=["hard", "synthetic"])
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 48, 64, 96, 128, 192, 256])
    parser.add_argument(
        "--large", type=int, default=0, help="also the compressed kinds on a hard set this big"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    about = {**host(), "omp_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__}
    print(json.dumps(about))
    every: list[VQRequest] = ["ivf", "hnsw", "ivf-sq8", "ivf-pq", "auto"]
    rows = [
        row
        for name in args.sets
        for row in run_set(name, args.items, args.queries, args.noise, args.target, args.ef, every)
    ]
    if args.large:
        large = run_set(
            "hard", args.large, args.queries, args.noise, args.target, [], ["ivf-sq8", "ivf-pq"]
        )
        rows += [{**row, "set": f"hard {args.large:,}"} for row in large]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vq.json").write_text(json.dumps(report, indent=2))
    print(
        table(
            [
                "set",
                "index",
                "build s",
                "bytes/item",
                "queries/s",
                f"recall@{K} new queries",
                "build's estimate",
                "old estimate (catalog rows)",
            ],
            [
                [
                    r["set"],
                    r["index"],
                    r["build_s"],
                    r["bytes_per_item"],
                    round(r["queries_per_s"]),
                    r["recall"],
                    r["estimate"],
                    r["old_estimate"],
                ]
                for r in rows
            ],
        )
    )
    print(f"JSON: {args.out / 'vq.json'}")


if __name__ == "__main__":
    main()
