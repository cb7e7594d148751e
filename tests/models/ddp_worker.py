"""Run by test_align.py under `torchrun --nproc-per-node 2`: two alignment steps with DDP on
gloo, then each rank writes a digest of its parameters (they must agree across ranks)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from catalogs.synthetic import synthetic_catalog
from models.align import AlignConfig, InputsFn, catalog_inputs, train
from models.encoder import EncoderConfig, MultimodalEncoder, load_tokenizer

BATCH = 4  # pairs per process; the global batch is 2 * BATCH


def setup() -> tuple[MultimodalEncoder, InputsFn, np.ndarray]:
    """The same model, inputs and pairs in every process, and in the test's reference run."""
    torch.manual_seed(0)  # same initial weights on both ranks, as DDP expects
    catalog = synthetic_catalog(64, n_groups=4, seed=0)
    model = MultimodalEncoder(EncoderConfig(), pretrained=False)
    pairs = np.stack([np.arange(0, 32), np.arange(32, 64)], axis=1)
    return model, catalog_inputs(catalog, load_tokenizer(16)), pairs


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model, inputs, pairs = setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    config = AlignConfig(steps=2, batch_size=BATCH, warmup=1, progress=False)
    result = train(model, inputs, pairs, config)
    rank, world = dist.get_rank(), dist.get_world_size()
    digest = hashlib.sha256()
    changed = 0
    for name, p in model.named_parameters():
        digest.update(p.detach().numpy().tobytes())
        if name in before and not torch.equal(before[name], p.detach()):
            changed += 1
    report = {
        "rank": rank,
        "world": world,
        "digest": digest.hexdigest(),
        "changed": changed,
        "losses": result.losses,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
