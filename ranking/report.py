"""The evaluation's report: docs/results.md in the shape of the paper's tables, and its PNGs.

Everything here renders the runs `ranking.evaluate` made; nothing trains or scores. matplotlib
is imported only when the plots are drawn (it is in the dev and train extras).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codebooks.report import save_figure
from codebooks.summary import table
from ranking.data import N_POPULARITY_GROUPS, Split

if TYPE_CHECKING:
    from ranking.evaluate import EvalConfig, EvalData, Run, Scores, Which
    from ranking.model import Variant

LABELS: dict[str, str] = {
    "base": "Baseline",
    "ia": "+IA Rep",
    "vq": "+VQ Code",
    "rq": "+RQ Code",
    "vqrq": "+VQ & RQ Code",
}
METRICS = ("auc", "uauc", "gauc")
WHICH: tuple[Which, ...] = ("warm", "cold")  # the test sets, in the order the tables show them
DPI = 120


def write_report(config: EvalConfig, runs: list[Run], data: EvalData) -> list[Path]:
    """Write the report to `config.out` and its PNGs beside it; the paths written."""
    if config.out is None:
        raise ValueError("config.out is None: there is nowhere to write the report")
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(markdown(config, runs, data))
    return [config.out, *plot(runs, config.out)]


def markdown(config: EvalConfig, runs: list[Run], data: EvalData) -> str:
    """docs/results.md: every table of the issue, from the runs of `evaluate`."""
    main = [r for r in runs if r.study == "main"]
    split, rc, h = data.split, config.rank, data.holdout
    n_cold = int(h.cold_items(data.n_items).sum())
    lines = [
        f"# Ranking results: {config.data}",
        "",
        f"Bundle `{data.version}`. Held out (`catalogs.holdout`, the same split the encoder's "
        f"alignment respected): each user's latest {h.test_share:.0%} of events, and {n_cold} "
        f"cold items ({h.cold_share:.0%}, seed {h.seed}) never trained on, encoded as a new "
        f"upload would be. {len(split.train)} training samples, {len(split.test)} warm and "
        f"{len(split.cold_test)} cold test samples; history = last {config.history} positives "
        f"strictly before the event. Every variant: dim {rc.dim}, {rc.epochs} epochs, batch "
        f"{rc.batch_size}, Adam lr {rc.lr}; seeds {list(config.seeds)}; mean +- std over seeds.",
        "",
        "## Warm items (each user's latest events)",
        "",
        _variants_table(main, "warm"),
    ]
    if all(r.cold is not None for r in main):
        lines += [
            "",
            "## Cold-start items (never seen in training)",
            "",
            _variants_table(main, "cold"),
        ]
    lines += ["", f"![AUC by variant]({_png(config, 'variants')})"]
    lines += ["", *_groups_table(main, split), "", f"![AUC by group]({_png(config, 'groups')})"]
    versus = [
        (
            "unaligned",
            "Is alignment worth it? Codes of the aligned vs the unaligned encoder",
            f"The unaligned bundle (`{config.compare}`) is the same pipeline with 0 alignment "
            "steps: the pre-trained encoder's vectors, the same holdout and codebook settings.",
            ("aligned", "unaligned"),
        ),
        (
            "random",
            "Do the codes' meanings matter? Real vs random codes of the same shape",
            "The control bundle holds the same items with random Gaussian vectors, built with "
            "the same K, L, Nc and RQ method: the same tables and parameter count in the ranker, "
            "no meaning. Real codes must beat it for the gain to be the codes' and not the "
            "extra parameters'.",
            ("real", "random"),
        ),
    ]
    for study, title, text, names in versus:
        other = [r for r in runs if r.study == study]
        if other:
            lines += ["", f"## {title}", "", text, "", _versus_table(main, other, names)]
    ablated = [r for r in runs if r.study in ("k", "width")]
    if ablated:
        lines += ["", *_ablation_tables(ablated, config)]
    lines.append("")
    return "\n".join(lines)


def _results_table(headers: list[str], rows: list[list[str]]) -> str:
    """A table of the report: unpadded and without alignment marks, so a rerun of
    docs/results.md differs only where a number does."""
    return table(headers, rows, align="l" * len(headers), pad=False)


def _variants_table(runs: list[Run], which: Which) -> str:
    """Mean +- std of AUC/UAUC/GAUC per variant, and the mean's delta against Baseline."""

    def scores(r: Run) -> Scores:
        s = r.warm if which == "warm" else r.cold
        assert s is not None
        return s

    by = _by_variant(runs)
    base = {m: _mean_std([scores(r).metrics[m] for r in by.get("base", [])])[0] for m in METRICS}
    rows = []
    for v, rs in by.items():
        cells, deltas = [], []
        for m in METRICS:
            mean, std = _mean_std([scores(r).metrics[m] for r in rs])
            cells.append(f"{mean:.4f} +- {std:.4f}")
            deltas.append(f"{mean - base[m]:+.4f}" if "base" in by else "")
        rows.append([LABELS[v], *cells, *deltas])
    headers = ["variant", "AUC", "UAUC", "GAUC", "dAUC", "dUAUC", "dGAUC"]
    return _results_table(headers, rows)


def _groups_table(runs: list[Run], split: Split) -> list[str]:
    counts = np.bincount(split.popularity[split.test.item], minlength=N_POPULARITY_GROUPS)
    rows = [["test samples", *(str(int(c)) for c in counts)]]
    for v, rs in _by_variant(runs).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        rows.append([LABELS[v], *(f"{m:.4f}" for m in means)])
    headers = ["variant", *(f"L{g + 1}" for g in range(N_POPULARITY_GROUPS))]
    return [
        "## AUC by item popularity group (L1 least .. L6 most frequent in training; warm items)",
        "",
        _results_table(headers, rows),
    ]


def _versus_table(a: list[Run], b: list[Run], names: tuple[str, str]) -> str:
    """Warm and cold AUC of the variants `b` ran, side by side with the same variants of `a`."""
    x, y = names
    by_a = _by_variant(a)
    rows = []
    for v, rs in _by_variant(b).items():
        cells = []
        for which in WHICH:
            cells += [_cell([r.auc(which) for r in runs]) for runs in (by_a[v], rs)]
        rows.append([LABELS[v], *cells])
    headers = ["variant", f"warm AUC {x}", f"warm AUC {y}", f"cold AUC {x}", f"cold AUC {y}"]
    return _results_table(headers, rows)


def _ablation_tables(runs: list[Run], config: EvalConfig) -> list[str]:
    seeds = sorted({r.rank.seed for r in runs})
    lines = [f"## Ablations (paper Tables 7 and 8; seeds {seeds})"]
    studies = (
        ("k", "+VQ Code with K =", config.ks),
        ("width", "+RQ Code with code width =", config.code_dims),
    )
    for study, header, values in studies:
        rows = []
        for value in values:
            rs = [r for r in runs if r.study == study and r.setting == value]
            rows.append([str(value), *_cells3(rs)])
        lines += ["", _results_table([header, "warm AUC", "warm GAUC", "cold AUC"], rows)]
    lines += ["", f"![ablations]({_png(config, 'ablations')})"]
    return lines


def _cells3(runs: list[Run]) -> list[str]:
    return [
        _cell([r.auc("warm") for r in runs]),
        _cell([r.warm.metrics["gauc"] for r in runs]),
        _cell([r.auc("cold") for r in runs]),
    ]


def _cell(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.4f} +- {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.array(values, dtype=np.float64)
    if np.all(np.isnan(a)):
        return float("nan"), float("nan")
    return float(np.nanmean(a)), float(np.nanstd(a))


def _by_variant(runs: list[Run]) -> dict[Variant, list[Run]]:
    out: dict[Variant, list[Run]] = {}
    for r in runs:
        out.setdefault(r.variant, []).append(r)
    return out


def _png(config: EvalConfig, what: str) -> str:
    assert config.out is not None
    return f"{config.out.stem}-{what}.png"


def plot(runs: list[Run], out: Path) -> list[Path]:
    """PNGs next to the report: AUC by popularity group, and the ablations when there are any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    main = [r for r in runs if r.study == "main"]
    by = _by_variant(main)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="tight")
    for ax, which in zip(axes, WHICH, strict=True):
        stats = [_mean_std([r.auc(which) for r in rs]) for rs in by.values()]
        ax.bar(range(len(by)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=3)
        ax.set_xticks(range(len(by)), [LABELS[v] for v in by], rotation=20, fontsize=8)
        finite = [m for m, _ in stats if np.isfinite(m)]
        if finite:
            ax.set_ylim(min(finite) - 0.02, max(finite) + 0.01)
        ax.set_title(f"{which} items: test AUC (mean +- std over seeds)", fontsize=9)
    paths.append(save_figure(fig, out.with_name(f"{out.stem}-variants.png"), DPI))

    fig, ax = plt.subplots(figsize=(6, 3.5), layout="tight")
    for v, rs in _by_variant(main).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        ax.plot(range(1, N_POPULARITY_GROUPS + 1), means, marker="o", label=LABELS[v])
    ax.set_xlabel("popularity group (L1 least frequent)")
    ax.set_ylabel("test AUC (warm items)")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out.with_name(f"{out.stem}-groups.png"), DPI))

    ablated = {study: [r for r in runs if r.study == study] for study in ("k", "width")}
    if any(ablated.values()):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="tight")
        for ax, (study, rs) in zip(axes, ablated.items(), strict=True):
            xs = sorted({r.setting or 0 for r in rs})
            for which in WHICH:
                ys = [_mean_std([r.auc(which) for r in rs if r.setting == x])[0] for x in xs]
                ax.plot(xs, ys, marker="o", label=f"{which} items")
            ax.set_xlabel("VQ codes K (+VQ Code)" if study == "k" else "code width (+RQ Code)")
            ax.set_ylabel("test AUC")
            ax.legend(fontsize=8)
        paths.append(save_figure(fig, out.with_name(f"{out.stem}-ablations.png"), DPI))
    return paths
