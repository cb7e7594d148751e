"""The whole evaluation, end to end, on a tiny synthetic catalog and bundles built for it."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from catalogs.holdout import HOLDOUT_FILE, ColdItems, Holdout, save_cold_items
from catalogs.synthetic import synthetic_catalog, synthetic_interactions, write_synthetic
from codebooks import BuildConfig, build
from ranking.__main__ import main
from ranking.evaluate import EvalConfig, evaluate
from ranking.model import RankConfig
from ranking.report import LABELS

ITEMS, GROUPS = 120, 4
HOLDOUT = Holdout(test_share=0.2, cold_share=0.15, seed=0)


def _bundle(root: Path, signal: float, holdout: Holdout = HOLDOUT) -> Path:
    """An evaluation bundle: embeddings that follow the business group by `signal`, plus noise;
    the warm items in its catalog, the cold ones in its holdout file."""
    catalog = synthetic_catalog(ITEMS, n_groups=GROUPS, seed=0)
    rng = np.random.default_rng(0)
    emb = signal * np.eye(GROUPS, 16, dtype=np.float32)[catalog.business] + 0.3 * (
        rng.standard_normal((ITEMS, 16)).astype(np.float32)
    )
    cold = holdout.cold_items(ITEMS)
    root.mkdir(parents=True, exist_ok=True)
    extra = save_cold_items(root / HOLDOUT_FILE, ColdItems(holdout, catalog.ids[cold], emb[cold]))
    config = BuildConfig(k=5, levels=3, centroids=8, niter=5, gpu="off")
    return build(
        catalog.ids[~cold], emb[~cold], config, root / "bundles", extra_files={HOLDOUT_FILE: extra}
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("aligned"), signal=1.0)


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("unaligned"), signal=0.0)


def _config(bundle: Path, out: Path | None) -> EvalConfig:
    return EvalConfig(
        data="synthetic",
        bundle=bundle,
        items=ITEMS,
        groups=GROUPS,
        events=3000,
        history=10,
        seeds=(0, 1),
        rank=RankConfig(dim=4, epochs=1, batch_size=256),
        ks=(2, 5),
        code_dims=(4, 8),
        out=out,
        progress=False,
    )


def test_evaluate_writes_every_table(bundle: Path, unaligned: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    runs = evaluate(replace(_config(bundle, out), compare=unaligned))
    main_runs = [r for r in runs if r.study == "main"]
    assert len(main_runs) == 2 * len(LABELS)
    assert len([r for r in runs if r.study == "unaligned"]) == 2 * 4  # the code variants
    assert len([r for r in runs if r.study == "random"]) == 2 * 2  # +RQ and +VQ & RQ
    assert len([r for r in runs if r.study in ("k", "width")]) == 4
    for run in main_runs:
        assert run.cold is not None
        for value in [*run.warm.metrics.values(), *run.cold.metrics.values()]:
            assert 0.0 <= value <= 1.0
    text = out.read_text()
    assert "## Cold-start items" in text
    assert "## Is alignment worth it?" in text
    assert "## Do the codes' meanings matter?" in text
    assert "| +VQ Code with K = |" in text
    for label in LABELS.values():
        assert text.count(f"| {label} |") >= 3  # warm, cold and popularity tables
    # the table's mean is the mean over the seeds' runs
    base_auc = np.mean([r.warm.metrics["auc"] for r in main_runs if r.variant == "base"])
    row = re.search(r"\| Baseline \| ([0-9.]+) \+-", text)
    assert row is not None
    assert float(row.group(1)) == pytest.approx(base_auc, abs=1e-4)
    for png in ("results-variants.png", "results-groups.png", "results-ablations.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_a_compare_bundle_must_hold_out_the_same(bundle: Path, tmp_path: Path) -> None:
    other = _bundle(tmp_path, signal=0.0, holdout=Holdout(0.2, 0.15, seed=1))
    with pytest.raises(ValueError, match="holdout"):
        evaluate(replace(_config(bundle, tmp_path / "r.md"), compare=other))


def test_cli_names_the_missing_items(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    # the CLI's synthetic defaults are the pipeline's (5000 items): too many for this bundle
    with pytest.raises(ValueError, match="neither in the bundle nor in its holdout"):
        main(["evaluate", "--data", "synthetic", "--bundle", str(bundle), "--out", str(out)])


def test_your_own_files_are_evaluated_like_the_built_in_set(bundle: Path, tmp_path: Path) -> None:
    """The same catalog and log, once generated and once read from the user's two files:
    the same samples, so the same scores."""
    catalog = synthetic_catalog(ITEMS, n_groups=GROUPS, seed=0)
    events = synthetic_interactions(catalog, 3000, seed=0)
    files = write_synthetic(catalog, events, tmp_path / "shop", progress=False)
    quick = replace(
        _config(bundle, None),
        seeds=(0,),
        variants=("base", "vqrq"),
        ablation_seeds=(),
        control=False,
    )
    built_in = evaluate(quick)
    own = evaluate(replace(quick, data="files", files=files))
    assert [r.warm.metrics for r in own] == [r.warm.metrics for r in built_in]
    assert [r.cold.metrics for r in own if r.cold] == [r.cold.metrics for r in built_in if r.cold]
