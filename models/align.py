"""Item alignment: fine-tune the encoder so that items people engage with together embed close.

The loss is QARM's batch contrastive loss: a symmetric InfoNCE over (trigger, target) pairs, in
which every other target in the batch is a negative. One process or many: started by `torchrun`,
each process takes its slice of every global batch, the embeddings are all-gathered so the
negatives are the whole global batch, and DistributedDataParallel averages the gradients (gloo
on CPU, NCCL on GPU): N processes with B pairs each take the step one process would with N*B.

Read top to bottom: config, input preparation, the training loop, then embedding the catalog.
How good the embeddings are is measured in `models/quality.py`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from tokenizers import Tokenizer
from torch import Tensor, nn
from tqdm import tqdm

from catalogs.content import Catalog, IntArray
from models.backbone import Backbone
from models.encoder import (
    FEATURE_INPUT,
    INPUT_NAMES,
    FeatureEncoder,
    MultimodalEncoder,
    encode_inputs,
    tokenize,
)
from models.pairs import PairArray

log = logging.getLogger(__name__)

CHECKPOINT = "align.pt"


@dataclass(frozen=True)
class AlignConfig:
    steps: int = 300  # optimiser steps
    batch_size: int = 128  # pairs per step per process; 2x as many items pass the encoder
    lr: float = 2e-3  # AdamW learning rate of the towers, fusion and head
    text_lr: float = 3e-5  # learning rate of the MiniLM layers left trainable
    backbone_lr: float = 1e-4  # of the pretrained image/audio backbone layers left trainable
    weight_decay: float = 0.01  # on matrices only, not on norms and biases (as nanoGPT)
    warmup: int = 10  # linear warm-up steps, then cosine decay to 10% of the rate
    temperature: float = 0.05  # InfoNCE temperature: lower sharpens the softmax over negatives
    seed: int = 0  # seeds the batch order; the caller seeds model initialisation
    checkpoint_dir: Path | None = None  # where align.pt is written; None: no checkpoints
    checkpoint_every: int = 50  # steps between checkpoints (and one at the end)
    resume: bool = False  # continue from checkpoint_dir/align.pt when it exists
    amp: bool = True  # bf16 autocast on GPU; ignored on CPU, where it would only be slower
    progress: bool = True  # a tqdm bar with loss and throughput (rank 0 only)
    embed_batch: int = 256  # items per forward pass when embedding the catalog
    workers: int = field(default_factory=lambda: default_workers())  # input-preparing processes
    prefetch: int = 4  # batches each worker prepares ahead


@dataclass(frozen=True)
class AlignResult:
    losses: list[float]  # loss of every step run in this call
    steps_done: int  # the step count reached (includes resumed steps)
    pairs_per_s: float  # training throughput of this call, all processes together


def info_nce(a: Tensor, b: Tensor, temperature: float, *, rank: int = 0, world: int = 1) -> Tensor:
    """Symmetric InfoNCE of row-aligned (B, d) embeddings: a_i's positive is b_i, and every
    other b_j in the batch is a negative (and the same the other way round).

    Under DDP (`world` > 1) the batch is the global one: every process's rows are gathered
    with gradients, so each process scores its B queries against all world * B keys, and the
    mean of the processes' losses is the loss one process would compute on the whole batch.
    """
    a_all, b_all = _gather(a, world), _gather(b, world)  # (world * B, d)
    labels = torch.arange(len(a), device=a.device) + rank * len(a)
    return 0.5 * (
        F.cross_entropy(a @ b_all.T / temperature, labels)
        + F.cross_entropy(b @ a_all.T / temperature, labels)
    )


def _gather(x: Tensor, world: int) -> Tensor:
    """All processes' x stacked in rank order; the backward pass returns each process the
    gradient of every process's loss with respect to its own rows (all-gather with autograd)."""
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))  # type: ignore[no-untyped-call]


Inputs = dict[str, Tensor]
InputsFn = Callable[[IntArray], Inputs]  # catalog rows -> the model's named inputs


def default_workers() -> int:
    """One input-preparing process per spare core, at most 8: decoding and tokenising then
    run beside the forward and backward pass instead of before it."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _Prepared(torch.utils.data.Dataset[tuple[IntArray, Inputs]]):
    """Batch i -> (its catalog rows, their inputs); a worker process calls `inputs_fn`."""

    def __init__(self, rows_of: Callable[[int], IntArray], n: int, inputs_fn: InputsFn) -> None:
        self.rows_of, self.n, self.inputs_fn = rows_of, n, inputs_fn

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[IntArray, Inputs]:
        rows = self.rows_of(i)
        return rows, self.inputs_fn(rows)


def prepared(
    rows_of: Callable[[int], IntArray], n: int, inputs_fn: InputsFn, workers: int, prefetch: int
) -> Iterable[tuple[IntArray, Inputs]]:
    """Batches 0..n-1 as (rows, inputs), in order, prepared `prefetch` batches ahead by
    `workers` forked processes (0: in this process, one batch at a time). The result does not
    depend on `workers`: batch i is a function of i alone."""
    dataset = _Prepared(rows_of, n, inputs_fn)
    if workers == 0 or n == 0:
        return (dataset[i] for i in range(n))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the workers tokenise; no threads to fork
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=min(workers, n),
        prefetch_factor=prefetch,
        multiprocessing_context="fork",
    )


class _Step(nn.Module):
    """What DDP wraps: embeds a batch of named inputs, whichever encoder and path it is.

    DDP must see a module's forward to prepare its gradient reduction, so the three paths
    (features, full multimodal, cached text plus `fuse`) all go through this one forward.
    """

    def __init__(self, model: MultimodalEncoder | FeatureEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Inputs) -> Tensor:
        out: Tensor
        if isinstance(self.model, FeatureEncoder):
            out = self.model(inputs[FEATURE_INPUT])
        elif "text" in inputs:
            out = self.model.fuse(inputs["text"], *(inputs[n] for n in INPUT_NAMES[1:]))
        else:
            out = self.model(*(inputs[n] for n in INPUT_NAMES))
        return out


def catalog_inputs(
    catalog: Catalog, tokenizer: Tokenizer, text_cache: Tensor | None = None
) -> InputsFn:
    """Rows -> the six contract inputs rendered from the catalog; with `text_cache` ((N, 384)
    pooled MiniLM vectors of a frozen text tower) the rows' cached vectors ride along as
    `text`, and the text tower is skipped (the same function, most of the CPU cost saved)."""

    def inputs(rows: IntArray) -> Inputs:
        out = encode_inputs(catalog.content(rows), tokenizer)
        if text_cache is not None:
            out["text"] = text_cache[torch.from_numpy(np.asarray(rows, dtype=np.int64))]
        return out

    return inputs


def feature_inputs(features: npt.NDArray[np.float32]) -> InputsFn:
    """Rows -> {"features": (B, F)} from an (N, F) table of upstream embeddings."""
    table = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))

    def inputs(rows: IntArray) -> Inputs:
        return {FEATURE_INPUT: table[torch.from_numpy(np.asarray(rows, dtype=np.int64))]}

    return inputs


def train(
    model: MultimodalEncoder | FeatureEncoder,
    inputs_fn: InputsFn,
    pairs: PairArray,
    config: AlignConfig,
) -> AlignResult:
    """Align `model` in place on `pairs` ((M, 2) catalog rows) for `config.steps` steps.

    `inputs_fn` turns catalog rows into model inputs (`catalog_inputs`, `feature_inputs`).
    Under torchrun, call it in every process with the same arguments.
    """
    rank, world = distributed()
    device = next(model.parameters()).device
    step_module: nn.Module = _Step(model)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(step_module)
    optimizer = _optimizer(model, config)
    start, losses = _maybe_resume(model, optimizer, config)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.amp and device.type == "cuda"
        else nullcontext()
    )
    per_rank = min(config.batch_size, len(pairs) // world)  # every process gets as many rows
    if per_rank < 2:
        raise ValueError(f"{len(pairs)} pairs: too few for {world} process(es), 2 rows each")
    batches = _PairBatches(pairs, per_rank, rank, world, config.seed, start)
    loader = prepared(
        batches.items, max(0, config.steps - start), inputs_fn, config.workers, config.prefetch
    )
    bar = tqdm(
        range(start, config.steps),
        desc="align",
        unit="step",
        disable=not config.progress or rank != 0,
        initial=start,
        total=config.steps,
    )
    model.train()
    t0, done = time.perf_counter(), 0
    for step, (items, batch) in zip(bar, loader, strict=True):
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * _lr_factor(step, config)

        with autocast:
            emb = step_module(inputs).float()  # (2B, d)
            a, b = emb[: len(items) // 2], emb[len(items) // 2 :]
            loss = info_nce(a, b, config.temperature, rank=rank, world=world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

        losses.append(loss.item())
        done += len(items) // 2 * world
        rate = done / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", pairs_s=f"{rate:.0f}")
        if config.checkpoint_dir and rank == 0 and (step + 1) % config.checkpoint_every == 0:
            save_checkpoint(config.checkpoint_dir / CHECKPOINT, model, optimizer, step + 1, losses)
    bar.close()
    if config.checkpoint_dir and rank == 0 and config.steps > start:
        save_checkpoint(config.checkpoint_dir / CHECKPOINT, model, optimizer, config.steps, losses)
    model.eval()
    elapsed = time.perf_counter() - t0
    return AlignResult(
        losses=losses[start:] if len(losses) > start else [],
        steps_done=config.steps,
        pairs_per_s=done / elapsed if elapsed > 0 else 0.0,
    )


def _optimizer(model: nn.Module, config: AlignConfig) -> torch.optim.AdamW:
    """AdamW with decay on matrices only; pretrained weights left trainable (MiniLM layers,
    a backbone's fine-tuned layers) get their own small learning rates."""
    pretrained = {id(p) for m in model.modules() if isinstance(m, Backbone) for p in m.parameters()}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr = (
                config.text_lr
                if name.startswith("text.")
                else config.backbone_lr
                if id(p) in pretrained
                else config.lr
            )
            groups.setdefault((lr, p.dim() >= 2), []).append(p)
    param_groups = [
        {
            "params": params,
            "weight_decay": config.weight_decay if decay else 0.0,
            "base_lr": lr,
            "lr": lr,
        }
        for (lr, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups)


def _lr_factor(step: int, config: AlignConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class _PairBatches:
    """This process's share of every global batch: a seeded permutation of the pairs per epoch,
    so step s always gets the same batch (a resumed run sees exactly the batches the
    uninterrupted run would have, and a worker process computes it from s alone)."""

    def __init__(
        self, pairs: PairArray, per_rank: int, rank: int, world: int, seed: int, start: int
    ) -> None:
        if len(pairs) < 1:
            raise ValueError("no pairs to train on")
        self.pairs, self.per_rank, self.rank, self.seed, self.start = (
            pairs,
            per_rank,
            rank,
            seed,
            start,
        )
        self.global_batch = min(per_rank * world, len(pairs))
        self.per_epoch = len(pairs) // self.global_batch
        self._order: tuple[int, IntArray] | None = None

    def items(self, i: int) -> IntArray:
        """(2B,) catalog rows of step start + i: this process's triggers, then its targets."""
        epoch, k = divmod(self.start + i, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (
                epoch,
                np.random.default_rng((self.seed, epoch)).permutation(len(self.pairs)),
            )
        batch = self._order[1][k * self.global_batch : (k + 1) * self.global_batch]
        rows = self.pairs[batch][self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        return np.concatenate([rows[:, 0], rows[:, 1]])


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, losses: list[float]
) -> None:
    """Model and optimiser state, step and loss history; written atomically (tmp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "losses": losses,
    }
    torch.save(state, tmp)
    os.replace(tmp, path)


def _maybe_resume(
    model: nn.Module, optimizer: torch.optim.Optimizer, config: AlignConfig
) -> tuple[int, list[float]]:
    if not (config.checkpoint_dir and config.resume):
        return 0, []
    path = config.checkpoint_dir / CHECKPOINT
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("align: resumed from %s at step %d", path, state["step"])
    return int(state["step"]), list(state["losses"])


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def text_features(
    model: MultimodalEncoder,
    catalog: Catalog,
    tokenizer: Tokenizer,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """(N, 384) pooled MiniLM vectors of every catalog item, for a frozen text tower."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(catalog), batch_size)
    for start in tqdm(starts, desc="text tower", disable=not progress):
        rows = np.arange(start, min(start + batch_size, len(catalog)))
        ids, mask = tokenize(tokenizer, catalog.texts(rows))
        out.append(model.text(ids.to(device), mask.to(device)))
    return torch.cat(out).cpu()


@torch.no_grad()
def embed(
    model: MultimodalEncoder | FeatureEncoder,
    inputs_fn: InputsFn,
    n_items: int,
    batch_size: int = 256,
    workers: int = 0,
    prefetch: int = 4,
    progress: bool = False,
) -> npt.NDArray[np.float32]:
    """(N, d) float32 L2-normalised embeddings of catalog rows 0..N-1, in row order."""
    model.eval()
    device = next(model.parameters()).device
    step = _Step(model)
    out = []
    n_batches = -(-n_items // batch_size)

    def rows_of(i: int) -> IntArray:
        return np.arange(i * batch_size, min((i + 1) * batch_size, n_items))

    batches = prepared(rows_of, n_batches, inputs_fn, workers, prefetch)
    for _, inputs in tqdm(batches, desc="embed", total=n_batches, disable=not progress):
        out.append(step({k: v.to(device) for k, v in inputs.items()}).float().cpu())
    return torch.cat(out).numpy().astype(np.float32)


def config_dict(config: AlignConfig) -> dict[str, Any]:
    """The config as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
