"""Alignment: the loss, the trainer (determinism, resume, learning), DDP on gloo, evaluation."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from models.align import (
    AlignConfig,
    embed,
    feature_inputs,
    info_nce,
    train,
)
from models.encoder import EncoderConfig, FeatureEncoder
from models.quality import neighbour_purity, pair_recall, plot_maps
from tests.models import ddp_worker

ROOT = Path(__file__).resolve().parents[2]


def test_info_nce_matches_a_loop() -> None:
    a = F.normalize(torch.randn(6, 8), dim=1)
    b = F.normalize(torch.randn(6, 8), dim=1)
    expected = torch.tensor(0.0)
    for i in range(6):
        expected -= 0.5 * torch.log_softmax(a[i] @ b.T / 0.1, 0)[i]
        expected -= 0.5 * torch.log_softmax(b[i] @ a.T / 0.1, 0)[i]
    torch.testing.assert_close(info_nce(a, b, 0.1), expected / 6)
    assert info_nce(a, a, 0.01) < info_nce(a, b, 0.01)


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features whose groups are hidden behind a strong distractor; pairs follow the groups."""
    rng = np.random.default_rng(seed)
    n, groups = 240, 6
    group = rng.integers(0, groups, n)
    distractor = rng.integers(0, groups, n)
    feats = 0.4 * np.eye(groups)[group] @ rng.standard_normal((groups, 32))
    feats += 2.0 * np.eye(groups)[distractor] @ rng.standard_normal((groups, 32))
    feats += 0.1 * rng.standard_normal((n, 32))
    pairs = []
    for g in range(groups):
        members = np.flatnonzero(group == g)
        pairs.append(np.stack([members, np.roll(members, 1)], 1))
        pairs.append(np.stack([members, np.roll(members, 2)], 1))
    all_pairs = np.concatenate(pairs)
    all_pairs = all_pairs[rng.permutation(len(all_pairs))]
    return feats.astype(np.float32), group, distractor, all_pairs[:400], all_pairs[400:]


def _model(seed: int = 0) -> FeatureEncoder:
    torch.manual_seed(seed)
    return FeatureEncoder(32, EncoderConfig(dim=16, hidden=64))


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_alignment_improves_held_out_recall() -> None:
    feats, group, distractor, train_pairs, held = _toy()
    model = _model()
    inputs = feature_inputs(feats)
    before = embed(model, inputs, len(feats))
    result = train(
        model,
        inputs,
        train_pairs,
        AlignConfig(steps=150, batch_size=32, lr=5e-3, temperature=0.1, progress=False),
    )
    after = embed(model, inputs, len(feats))
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    # Groups of ~40: recall@50 can reach 1 once the groups are found under the distractor.
    assert pair_recall(after, held)["recall@50"] > pair_recall(before, held)["recall@50"] + 0.2
    # The distractor rules the neighbourhoods before, the behaviour groups after (Figure 6).
    assert neighbour_purity(before, distractor) > neighbour_purity(before, group)
    assert neighbour_purity(after, group) > neighbour_purity(after, distractor)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)


def test_training_is_deterministic_whoever_prepares_the_inputs() -> None:
    """Batch s is a function of s alone: worker processes change the speed, not the model."""
    feats, _, _, pairs, _ = _toy()
    runs = []
    for workers in (0, 2):
        model = _model(seed=1)
        train(
            model,
            feature_inputs(feats),
            pairs,
            AlignConfig(steps=5, batch_size=16, progress=False, seed=4, workers=workers),
        )
        runs.append(_params(model))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_resume_continues_where_the_checkpoint_left_off(tmp_path: Path) -> None:
    feats, _, _, pairs, _ = _toy()
    full = _model()
    train(full, feature_inputs(feats), pairs, AlignConfig(steps=6, batch_size=16, progress=False))

    ckpt = AlignConfig(
        steps=3, batch_size=16, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1
    )
    train(_model(), feature_inputs(feats), pairs, ckpt)
    assert (tmp_path / "align.pt").is_file()
    resumed = _model(seed=99)  # other initial weights: everything must come from the checkpoint
    result = train(
        resumed,
        feature_inputs(feats),
        pairs,
        AlignConfig(steps=6, batch_size=16, progress=False, checkpoint_dir=tmp_path, resume=True),
    )
    assert len(result.losses) == 3
    assert result.steps_done == 6
    for a, b in zip(_params(full), _params(resumed), strict=True):
        torch.testing.assert_close(a, b)


def test_pair_recall_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = rng.integers(0, 50, (30, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    hits = 0
    for a, b in np.concatenate([pairs, pairs[:, ::-1]]):
        scores = x @ x[a]
        scores[a] = -np.inf
        hits += b in np.argsort(-scores)[:10]
    assert pair_recall(x, pairs, (10,))["recall@10"] == pytest.approx(hits / (2 * len(pairs)))


def test_plot_maps_writes_a_png(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    path = plot_maps(x, x * 2, np.arange(100) % 5, tmp_path / "map.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ddp_two_processes_on_gloo(tmp_path: Path) -> None:
    """torchrun starts 2 CPU processes; DDP must leave them with identical, updated weights."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        str(ROOT / "tests" / "models" / "ddp_worker.py"),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert reports[0]["digest"] == reports[1]["digest"]  # gradients were averaged
    assert reports[0]["changed"] > 0
    assert reports[0]["losses"] != reports[1]["losses"]  # each rank saw its own slice
    # Negatives span the global batch: the ranks' mean loss is the loss of one process on
    # both slices together, at the first step and (same update) at the second.
    model, inputs, pairs = ddp_worker.setup()
    config = AlignConfig(steps=2, batch_size=2 * ddp_worker.BATCH, warmup=1, progress=False)
    single = train(model, inputs, pairs, config).losses
    ddp = np.mean([r["losses"] for r in reports], axis=0)
    np.testing.assert_allclose(ddp, single, rtol=1e-4)
