"""The evaluation: every variant, several seeds, one report in the shape of the paper's tables.

Data comes from the models room's loaders (MovieLens-100k, or the seeded synthetic catalog and
log the synthetic bundle was built from); codes come from the bundle through `codebooks`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebooks import load_bundle
from ranking.codes import ItemCodes, item_codes
from ranking.data import N_POPULARITY_GROUPS, Split, make_split
from ranking.metrics import auc, gauc, uauc
from ranking.model import VARIANTS, RankConfig, Variant, predict, train_ranker

log = logging.getLogger(__name__)

LABELS: dict[str, str] = {
    "base": "Baseline",
    "ia": "+IA Rep",
    "vq": "+VQ Code",
    "rq": "+RQ Code",
    "vqrq": "+VQ & RQ Code",
}
METRICS = ("auc", "uauc", "gauc")


@dataclass(frozen=True)
class EvalConfig:
    data: Literal["movielens", "synthetic"]
    bundle: Path  # artifacts/<version>: the codes
    data_dir: Path = Path("data/ml-100k")  # MovieLens-100k files (`make data`)
    items: int = 5000  # synthetic: catalog size, business groups, events and seed; read from
    groups: int = 32  # the bundle's alignment.json when it has one, so they match the bundle
    events: int = 300_000
    data_seed: int = 0
    history: int = 50  # latest positives in the history feature
    test_share: float = 0.2  # each user's latest share of events is the test set
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[Variant, ...] = VARIANTS
    rank: RankConfig = field(default_factory=RankConfig)
    out: Path | None = Path("docs/results.md")  # None: return the results only


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    metrics: dict[str, float]  # auc, uauc, gauc on the test set
    auc_by_group: list[float]  # AUC of test samples whose item is in L1..L6 (NaN: one class)
    seconds: float


def load_events(config: EvalConfig) -> tuple[np.ndarray, Any]:
    """(catalog ids, Interactions) of the chosen data set (the models room's loaders)."""
    if config.data == "movielens":
        from models.movielens import load_movielens

        movies, events = load_movielens(config.data_dir)
        return movies.ids, events
    from models.catalog import synthetic_catalog, synthetic_interactions

    c = _synthetic_settings(config)
    catalog = synthetic_catalog(c.items, n_groups=c.groups, seed=c.data_seed)
    return catalog.ids, synthetic_interactions(catalog, c.events, seed=c.data_seed)


def _synthetic_settings(config: EvalConfig) -> EvalConfig:
    report = config.bundle / "alignment.json"
    if not report.is_file():
        return config
    built = json.loads(report.read_text()).get("config", {})
    return replace(
        config,
        items=built.get("items", config.items),
        groups=built.get("groups", config.groups),
        events=built.get("events", config.events),
        data_seed=built.get("seed", config.data_seed),
    )


def score(split: Split, probs: np.ndarray) -> tuple[dict[str, float], list[float]]:
    """Test-set AUC, UAUC, GAUC, and AUC per popularity group of the target item."""
    t = split.test
    metrics = {
        "auc": auc(t.label, probs),
        "uauc": uauc(t.user, t.label, probs),
        "gauc": gauc(t.user, t.label, probs),
    }
    group = split.popularity[t.item]
    by_group = []
    for g in range(N_POPULARITY_GROUPS):
        m = group == g
        ok = 0 < t.label[m].sum() < m.sum()
        by_group.append(auc(t.label[m], probs[m]) if ok else float("nan"))
    return metrics, by_group


@dataclass(frozen=True)
class Prepared:
    split: Split
    codes: ItemCodes
    n_users: int
    n_items: int
    version: str  # the bundle's


def prepare(config: EvalConfig) -> Prepared:
    """Load the log and the bundle's codes, and split the log into samples."""
    ids, events = load_events(config)
    bundle = load_bundle(config.bundle)
    split = make_split(
        events.user,
        events.item,
        events.ts,
        events.label,
        len(ids),
        history=config.history,
        test_share=config.test_share,
    )
    n_users = int(events.user.max()) + 1
    return Prepared(split, item_codes(bundle, ids), n_users, len(ids), bundle.version)


def run_one(data: Prepared, rank: RankConfig) -> Run:
    """Train one variant with one seed and score it on the test set."""
    t0 = time.perf_counter()
    model = train_ranker(data.split.train, data.n_users, data.n_items, data.codes, rank)
    metrics, by_group = score(data.split, predict(model, data.split.test))
    run = Run(rank.variant, rank.seed, metrics, by_group, time.perf_counter() - t0)
    log.info("%s seed %d: %s (%.1f s)", rank.variant, rank.seed, metrics, run.seconds)
    return run


def evaluate(config: EvalConfig) -> list[Run]:
    """Train and score every variant with every seed; write the report when `config.out`."""
    data = prepare(config)
    runs = [
        run_one(data, replace(config.rank, variant=variant, seed=seed))
        for variant in config.variants
        for seed in config.seeds
    ]
    if config.out is not None:
        text = report(config, runs, data.split, data.version)
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(text)
        plot_groups(runs, config.out.with_suffix(".png"))
    return runs


def ablate(
    config: EvalConfig,
    ks: tuple[int, ...] = (5, 10, 15, 20, 25),
    dims: tuple[int, ...] = (16, 32, 64),
) -> str:
    """The paper's Tables 7 and 8 in Markdown: `+VQ Code` with the first K of the VQ codes, and
    `+RQ Code` with code embeddings of each width; mean +- std of test AUC/UAUC/GAUC over seeds."""
    data = prepare(config)
    lines = [
        f"# Ablations: {config.data}",
        "",
        f"Bundle `{data.version}`; seeds {list(config.seeds)}; otherwise as docs/results.md.",
        "",
        "## VQ code length K (+VQ Code)",
        "",
        "| K | AUC | UAUC | GAUC |",
        "|---|---|---|---|",
    ]
    for k in ks:
        runs = [
            run_one(data, replace(config.rank, variant="vq", k=k, seed=s)) for s in config.seeds
        ]
        lines.append(f"| {k} | " + _cells(runs) + " |")
    lines += ["", "## Code embedding width (+RQ Code)", "", "| dim | AUC | UAUC | GAUC |"]
    lines.append("|---|---|---|---|")
    for d in dims:
        runs = [
            run_one(data, replace(config.rank, variant="rq", code_dim=d, seed=s))
            for s in config.seeds
        ]
        lines.append(f"| {d} | " + _cells(runs) + " |")
    text = "\n".join([*lines, ""])
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(text)
    return text


def _cells(runs: list[Run]) -> str:
    cells = []
    for m in METRICS:
        mean, std = _mean_std([r.metrics[m] for r in runs])
        cells.append(f"{mean:.4f} +- {std:.4f}")
    return " | ".join(cells)


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.array(values, dtype=np.float64)
    return float(np.nanmean(a)), float(np.nanstd(a))


def report(config: EvalConfig, runs: list[Run], split: Split, version: str) -> str:
    """docs/results.md: the main table (absolute and vs Baseline) and AUC by popularity group."""
    variants = list(dict.fromkeys(r.variant for r in runs))
    by: dict[str, list[Run]] = {v: [r for r in runs if r.variant == v] for v in variants}
    base = (
        {m: _mean_std([r.metrics[m] for r in by["base"]])[0] for m in METRICS}
        if "base" in by
        else None
    )
    rc = config.rank
    lines = [
        f"# Ranking results: {config.data}",
        "",
        f"Bundle `{version}`; {len(split.train)} training and {len(split.test)} test samples "
        f"(each user's latest {config.test_share:.0%} of events), history = last "
        f"{config.history} positives strictly before the event. Every variant: dim {rc.dim}, "
        f"{rc.epochs} epochs, batch {rc.batch_size}, Adam lr {rc.lr}; seeds {list(config.seeds)}; "
        "mean +- std over seeds.",
        "",
        "| variant | AUC | UAUC | GAUC | dAUC | dUAUC | dGAUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        cells = []
        deltas = []
        for m in METRICS:
            mean, std = _mean_std([r.metrics[m] for r in by[v]])
            cells.append(f"{mean:.4f} +- {std:.4f}")
            deltas.append(f"{mean - base[m]:+.4f}" if base is not None else "")
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells + deltas) + " |")
    counts = np.bincount(split.popularity[split.test.item], minlength=N_POPULARITY_GROUPS)
    lines += [
        "",
        "## AUC by item popularity group (L1 least .. L6 most frequent in training)",
        "",
        "| variant | " + " | ".join(f"L{g + 1}" for g in range(N_POPULARITY_GROUPS)) + " |",
        "|---|" + "---|" * N_POPULARITY_GROUPS,
        "| test samples | " + " | ".join(str(int(c)) for c in counts) + " |",
    ]
    for v in variants:
        groups = np.array([r.auc_by_group for r in by[v]])
        means = np.nanmean(groups, axis=0) if len(groups) else []
        lines.append(f"| {LABELS[v]} | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_groups(runs: list[Run], path: Path) -> Path:
    """AUC by popularity group, one line per variant, as a PNG next to the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for v in dict.fromkeys(r.variant for r in runs):
        groups = np.array([r.auc_by_group for r in runs if r.variant == v])
        ax.plot(
            range(1, N_POPULARITY_GROUPS + 1),
            np.nanmean(groups, axis=0),
            marker="o",
            label=LABELS[v],
        )
    ax.set_xlabel("popularity group (L1 least frequent)")
    ax.set_ylabel("test AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
