"""RQ method x balance: final MSE, per-level perplexity, collisions and build time.

    python -m bench.semantic_ids [--items 100000] [--embeddings E.npy --ids I.npy --name NAME]
    python -m bench.semantic_ids --scale 1000000      # one balanced 1M build, time and memory

Without --embeddings the catalog is the clustered synthetic one. Each row is one full build
through `codebooks.build` (flat VQ, which the RQ numbers do not depend on). Prints a markdown
table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.codebooks import machine
from codebooks.build import BuildConfig, build
from codebooks.bundle import load_manifest
from codebooks.clustered import clustered_embeddings
from codebooks.embeddings import load_embeddings
from codebooks.summary import table

VARIANTS: list[dict[str, Any]] = [
    {"method": "kmeans", "balance": "none"},
    {"method": "kmeans", "balance": "sinkhorn"},
    {"method": "kmeans", "balance": "none", "niter": 60},
    {"method": "faiss-rq", "balance": "none"},
    {"method": "faiss-rq", "balance": "sinkhorn"},
    {"method": "faiss-rq", "balance": "none", "beam_size": 4},
]


def one_build(
    ids: np.ndarray, x: np.ndarray, variant: dict[str, Any], root: Path
) -> dict[str, Any]:
    config = BuildConfig(vq_index="flat", gpu="off", **variant)
    start = time.perf_counter()
    manifest = load_manifest(build(ids, x, config, root))
    seconds = time.perf_counter() - start
    levels = manifest.metrics.levels
    return {
        **variant,
        "items": len(ids),
        "final_mse": levels[-1].mse,
        "perplexity": [round(lv.perplexity, 1) for lv in levels],
        "min_perplexity": min(lv.perplexity for lv in levels),
        "hourglass_levels": [lv.level for lv in levels if lv.hourglass],
        "shared_rate": manifest.metrics.collisions.shared_rate,
        "duplicate_rate": manifest.metrics.collisions.duplicate_rate,
        "distinct_tuples": manifest.metrics.collisions.distinct_tuples,
        "max_suffix": manifest.metrics.max_suffix,
        "rq_seconds": manifest.metrics.seconds["rq_train"] + manifest.metrics.seconds["rq_assign"],
        "build_seconds": seconds,
        "stage_seconds": manifest.metrics.seconds,
    }


def compare(name: str, ids: np.ndarray, x: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            rows.append({"data": name, **one_build(ids, x, variant, Path(tmp))})
            print(json.dumps(rows[-1]), flush=True)
    print(
        table(
            [
                "data",
                "method",
                "balance",
                "settings",
                "final MSE",
                "min perplexity",
                "hourglass",
                "shared rate",
                "distinct tuples",
                "RQ build s",
            ],
            [
                [
                    r["data"],
                    r["method"],
                    r["balance"],
                    " ".join(f"{k}={r[k]}" for k in ("niter", "beam_size") if k in r) or "-",
                    r["final_mse"],
                    r["min_perplexity"],
                    ",".join(map(str, r["hourglass_levels"])) or "-",
                    r["shared_rate"],
                    r["distinct_tuples"],
                    r["rq_seconds"],
                ]
                for r in rows
            ],
        )
    )
    return rows


def scale(n: int) -> dict[str, Any]:
    catalog = clustered_embeddings(n, 64, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        row = one_build(
            catalog.ids, catalog.embeddings, {"method": "kmeans", "balance": "sinkhorn"}, Path(tmp)
        )
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["input_mib"] = catalog.embeddings.nbytes / 2**20
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--ids", type=Path)
    parser.add_argument("--name", default=None)
    parser.add_argument("--scale", type=int, help="instead: one balanced build of this many items")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if args.scale:
        report["scale"] = scale(args.scale)
        name = f"semantic_ids_scale_{args.scale}"
    elif args.embeddings:
        ids, x = load_embeddings(args.embeddings, args.ids)
        name = args.name or args.embeddings.stem
        report["rows"] = compare(name, ids, x)
    else:
        catalog = clustered_embeddings(args.items, 64, seed=0)
        name = f"synthetic_{args.items}"
        report["rows"] = compare(name, catalog.ids, catalog.embeddings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.out / f'{name}.json'}")


if __name__ == "__main__":
    main()
