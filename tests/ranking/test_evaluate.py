"""The whole evaluation, end to end, on a tiny synthetic catalog and bundles built for it:
side features, references, the codebook-size sweep, cold paths and encoder seeds included."""

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
from ranking.evaluate import EvalConfig, evaluate, main_rows, prepare, validation_split
from ranking.model import RankConfig
from ranking.report import label

ITEMS, GROUPS = 120, 4
HOLDOUT = Holdout(test_share=0.2, cold_share=0.15, seed=0)


def _bundle(root: Path, signal: float, holdout: Holdout = HOLDOUT, seed: int = 0) -> Path:
    """An evaluation bundle: embeddings that follow the business group by `signal`, plus noise
    (drawn with `seed`: another encoder); the warm items in its catalog, the cold ones in its
    holdout file."""
    catalog = synthetic_catalog(ITEMS, n_groups=GROUPS, seed=0)
    rng = np.random.default_rng(seed)
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


@pytest.fixture(scope="module")
def second_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("encoder-1"), signal=1.0, seed=1)


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
        sweep_levels=(2, 3),
        sweep_centroids=(4, 8, 512),  # 512: more than the items, skipped
        cold_paths=(("vq", True, 0.0), ("vq", True, 0.2)),
        headline=("ia", "vq", "vqrq"),
        out=out,
        progress=False,
    )


def test_evaluate_writes_every_table(
    bundle: Path, unaligned: Path, second_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.md"
    config = replace(_config(bundle, out), compare=unaligned, encoders=(second_encoder,))
    runs = evaluate(config)
    main_runs = [r for r in runs if r.study == "main"]
    rows = main_rows(config, has_side=True)
    assert len(rows) == 5 + 5 + 2 + 3  # ID-only, with side, 2 cold paths, LR, DCN, LR + codes
    assert len(main_runs) == 2 * len(rows) - 2  # the LRs are deterministic: one fit each
    assert len([r for r in runs if r.study == "unaligned"]) == 2 * 3  # the headline variants
    assert len([r for r in runs if r.study == "encoder"]) == 2 * 3
    assert len([r for r in runs if r.study == "random"]) == 2 * 1  # +side +VQ & RQ
    assert len([r for r in runs if r.study in ("k", "width")]) == 4
    # the sweep: every size that fits, the best validation warm + cold AUC used everywhere
    sweep = [r for r in runs if r.study == "sweep"]
    sizes = {r.size for r in sweep if r.size is not None}
    assert sorted(sizes) == [(2, 4), (2, 8), (3, 4), (3, 8)]
    best = max(
        sizes, key=lambda s: sum(r.auc("warm") + r.auc("cold") for r in sweep if r.size == s)
    )
    assert all(r.size == best for r in runs if r.study in ("main", "unaligned", "random"))

    for run in main_runs:
        assert run.cold is not None
        for value in [*run.warm.metrics.values(), *run.cold.metrics.values()]:
            assert 0.0 <= value <= 1.0
    text = out.read_text()
    for title in ("Cold-start items", "Is alignment worth it?", "Do the codes' meanings matter?"):
        assert f"## {title}" in text
    assert "## Codes sized to the catalog" in text
    assert "## Seed spread" in text
    assert "| +side VQ Code with K =" in text
    assert "Side features (`+side` rows, LR, DCN; categories in brackets): style (" in text
    for name in {label(r) for r in rows}:
        assert text.count(f"| {name} |") >= 3, name  # warm, cold and popularity tables
    assert "| +side +VQ, pooled IDs + ID dropout 0.2 |" in text
    # the table's mean is the mean over the seeds' runs, and deltas are against Baseline + side
    base = [r.auc("warm") for r in main_runs if r.variant == "base" and not r.rank.side]
    row = re.search(r"\| Baseline \| ([0-9.]+) \+-", text)
    assert row is not None
    assert float(row.group(1)) == pytest.approx(np.mean(base), abs=1e-4)
    ref = np.mean([r.auc("warm") for r in main_runs if r.variant == "base" and r.rank.side])
    lr = np.mean([r.auc("warm") for r in main_runs if r.variant == "lr"])
    lr_row = re.search(r"\| LR \(IDs \+ side\) \|[^|]+\|[^|]+\|[^|]+\| ([-+0-9.]+) \|", text)
    assert lr_row is not None
    assert float(lr_row.group(1)) == pytest.approx(lr - ref, abs=2e-4)
    for png in ("results-variants.png", "results-groups.png", "results-ablations.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_the_validation_slice_reads_only_the_training_period(bundle: Path) -> None:
    """Every validation sample is a training sample of the real split (same user, item, time),
    and the validation-cold items have no validation training sample."""
    data, _ = prepare(_config(bundle, None))
    split, val = validation_split(data, history=10)
    train = data.split.train
    seen = set(zip(train.user.tolist(), train.item.tolist(), train.ts.tolist(), strict=True))
    for part in (split.train, split.test, split.cold_test):
        keys = zip(part.user.tolist(), part.item.tolist(), part.ts.tolist(), strict=True)
        assert set(keys) <= seen
    assert len(split.cold_test) > 0
    assert not val.cold_items(data.n_items)[split.train.item].any()
    assert val != data.holdout


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
        side=False,  # a user's files bring no side features
        sweep_levels=(),
    )
    built_in = evaluate(quick)
    own = evaluate(replace(quick, data="files", files=files))
    assert [r.warm.metrics for r in own] == [r.warm.metrics for r in built_in]
    assert [r.cold.metrics for r in own if r.cold] == [r.cold.metrics for r in built_in if r.cold]


def test_worker_processes_give_the_same_runs(bundle: Path) -> None:
    """Runs seed themselves: spread over two spawned processes, they score as in this one."""
    quick = replace(
        _config(bundle, None),
        variants=("base", "vq"),
        cold_paths=(),
        references=False,
        ablation_seeds=(),
        control=False,
        sweep_levels=(),
    )
    here = evaluate(quick)
    there = evaluate(replace(quick, workers=2))
    assert [(r.variant, r.rank.side, r.rank.seed) for r in there] == [
        (r.variant, r.rank.side, r.rank.seed) for r in here
    ]
    for a, b in zip(here, there, strict=True):
        assert b.warm.metrics == pytest.approx(a.warm.metrics, abs=1e-3)
