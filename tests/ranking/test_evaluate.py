"""The whole evaluation, end to end, on a tiny synthetic catalog and a bundle built for it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from codebooks import BuildConfig, build
from models.catalog import synthetic_catalog
from ranking.__main__ import main
from ranking.evaluate import LABELS, EvalConfig, evaluate
from ranking.model import RankConfig

ITEMS, GROUPS = 120, 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Codes for the tiny catalog: embeddings that follow the business group, plus noise."""
    catalog = synthetic_catalog(ITEMS, n_groups=GROUPS, seed=0)
    rng = np.random.default_rng(0)
    emb = np.eye(GROUPS, 16, dtype=np.float32)[catalog.business] + 0.3 * rng.standard_normal(
        (ITEMS, 16)
    ).astype(np.float32)
    config = BuildConfig(k=5, levels=3, centroids=8, niter=5, gpu="off")
    return build(catalog.ids, emb, config, tmp_path_factory.mktemp("artifacts"))


def test_evaluate_writes_every_table(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    config = EvalConfig(
        data="synthetic",
        bundle=bundle,
        items=ITEMS,
        groups=GROUPS,
        events=3000,
        history=10,
        seeds=(0, 1),
        rank=RankConfig(dim=4, epochs=1, batch_size=256),
        out=out,
    )
    runs = evaluate(config)
    assert len(runs) == 2 * len(LABELS)
    for run in runs:
        for value in run.metrics.values():
            assert 0.0 <= value <= 1.0
    text = out.read_text()
    for label in LABELS.values():
        assert text.count(f"| {label} |") == 2  # main table and popularity table
    # the table's mean is the mean over the seeds' runs
    base_auc = np.mean([r.metrics["auc"] for r in runs if r.variant == "base"])
    row = re.search(r"\| Baseline \| ([0-9.]+) \+-", text)
    assert row is not None
    assert float(row.group(1)) == pytest.approx(base_auc, abs=1e-4)
    assert out.with_suffix(".png").stat().st_size > 0


def test_cli_runs_one_variant(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    # the CLI's synthetic defaults are the pipeline's (5000 items): too many for this bundle
    with pytest.raises(ValueError, match="not in the bundle"):
        main(["evaluate", "--data", "synthetic", "--bundle", str(bundle), "--out", str(out)])
