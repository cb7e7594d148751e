"""Pair mining on a 1M-event synthetic log: seconds per stage and peak memory.

`python -m bench.pairs [--events N] [--items N]` prints a table and writes
bench/results/pairs.json. Not a test: speed lives here.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench.machine import cpu_name
from catalogs.synthetic import synthetic_catalog, synthetic_interactions
from codebooks.summary import table
from models.pairs import (
    PairConfig,
    merge_pairs,
    split_pairs,
    swing_pairs,
    train_id_embeddings,
    user2item_pairs,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PairConfig()

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    catalog = synthetic_catalog(args.items, n_groups=32, seed=0)
    log = synthetic_interactions(catalog, args.events, seed=0)
    positives = log.positives()
    seconds["generate log"] = time.perf_counter() - t

    t = time.perf_counter()
    emb = train_id_embeddings(positives, len(catalog), config)
    seconds["BPR ID embeddings"] = time.perf_counter() - t
    t = time.perf_counter()
    u2i = user2item_pairs(positives, emb, window=config.window)
    seconds["User2Item triggers"] = time.perf_counter() - t
    t = time.perf_counter()
    swing = swing_pairs(
        positives,
        len(catalog),
        alpha=config.swing_alpha,
        user_alpha=config.swing_user_alpha,
        top_k=config.swing_top_k,
        max_users=config.swing_max_users,
    )
    seconds["Swing top-k"] = time.perf_counter() - t
    t = time.perf_counter()
    merged = merge_pairs(u2i, swing, n_items=len(catalog))
    train, held = split_pairs(merged, config.holdout)
    seconds["merge, dedupe, split"] = time.perf_counter() - t
    mining = sum(v for k, v in seconds.items() if k != "generate log")

    same = float((catalog.business[merged[:, 0]] == catalog.business[merged[:, 1]]).mean())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "events": len(log),
        "positives": len(positives),
        "users": log.n_users,
        "items": len(catalog),
        "threads": args.threads,
        "cpu": cpu_name(),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "mining_seconds": round(mining, 2),
        "pairs": {
            "user2item": len(u2i),
            "swing": len(swing),
            "merged": len(merged),
            "train": len(train),
            "held_out": len(held),
        },
        "same_business_share": round(same, 4),
        "peak_rss_mib": round(peak_mib),
        "config": asdict(config),
    }
    print(
        f"{len(log):,} events ({len(positives):,} positive), {log.n_users:,} users, "
        f"{len(catalog):,} items, {args.threads} threads"
    )
    stages = [[stage, f"{s:.2f}"] for stage, s in seconds.items()]
    stages.append(["**mining total**", f"**{mining:.2f}**"])
    print(table(["stage", "seconds"], stages, align="lr", pad=False))
    print(f"pairs: {result['pairs']}; same business: {same:.1%}; peak RSS {peak_mib:.0f} MiB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pairs.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
