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
    from ranking.evaluate import EvalConfig, EvalData, Run, Which
    from ranking.model import RankConfig

LABELS: dict[str, str] = {  # the ID-only rows
    "base": "Baseline",
    "ia": "+IA Rep",
    "vq": "+VQ Code",
    "rq": "+RQ Code",
    "vqrq": "+VQ & RQ Code",
}
SIDE_LABELS: dict[str, str] = {  # the same variants on top of the side features
    "base": "Baseline + side",
    "ia": "+side +IA Rep",
    "vq": "+side +VQ",
    "rq": "+side +RQ",
    "vqrq": "+side +VQ & RQ",
    "lr": "LR (IDs + side)",
    "dcn": "DCN (IDs + side)",
    "lrcodes": "LR (IDs + side) +VQ & RQ",
}
REFERENCE_ROW = ("Baseline + side", "Baseline")  # deltas are against the first one present


def label(rank: RankConfig) -> str:
    """The row name of a run's settings: the variant, `+side`, and its cold path."""
    name = (SIDE_LABELS if rank.side else LABELS)[rank.variant]
    path = [
        *(["pooled IDs"] if rank.cold_pool else []),
        *([f"ID dropout {rank.id_dropout:g}"] if rank.id_dropout > 0 else []),
    ]
    return f"{name}, {' + '.join(path)}" if path else name


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
    side = ""
    if data.features is not None:
        fields = [f"{f.name} ({f.vocab})" for f in (*data.features.item, *data.features.user)]
        side = (
            f" Side features (`+side` rows, LR, DCN; categories in brackets): {', '.join(fields)}."
        )
    size = f" RQ codes: L = {data.size[0]}, Nc = {data.size[1]}." if data.size else ""
    lines = [
        f"# Ranking results: {config.data}",
        "",
        f"Bundle `{data.version}`. Held out (`catalogs.holdout`, the same split the encoder's "
        f"alignment respected): each user's latest {h.test_share:.0%} of events, and {n_cold} "
        f"cold items ({h.cold_share:.0%}, seed {h.seed}) never trained on, encoded as a new "
        f"upload would be. {len(split.train)} training samples, {len(split.test)} warm and "
        f"{len(split.cold_test)} cold test samples; history = last {config.history} positives "
        f"strictly before the event. Every variant: dim {rc.dim}, {rc.epochs} epochs, batch "
        f"{rc.batch_size}, Adam lr {rc.lr}; seeds {list(config.seeds)}; mean +- std over seeds."
        f"{size}{side}",
        "",
        f"Deltas are against `{_reference_row(main)}`; z = delta / sqrt(std^2 + std_ref^2) "
        "over the seeds (z > 2: beyond two standard deviations of both rows' seed spread). "
        "The LR rows are one fit each (lbfgs is deterministic: seeds change nothing).",
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
    sweep = [r for r in runs if r.study == "sweep"]
    if sweep:
        lines += ["", *_sweep_table(sweep, data)]
    encoders = [r for r in runs if r.study == "encoder"]
    if encoders:
        lines += ["", *_encoders_table(main, encoders)]
    versus = [
        (
            "unaligned",
            "Is alignment worth it? Codes of the aligned vs the unaligned encoder",
            f"The unaligned bundle (`{config.compare}`) is the same pipeline with 0 alignment "
            "steps: the pre-trained encoder's vectors, the same holdout and codebook settings "
            "(rebuilt at the chosen L and Nc like the aligned one).",
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


def _reference_row(runs: list[Run]) -> str:
    names = {label(r.rank) for r in runs}
    return next((n for n in REFERENCE_ROW if n in names), "")


def _variants_table(runs: list[Run], which: Which) -> str:
    """Mean +- std of AUC/UAUC/GAUC per row; the mean's delta against the reference row
    (`Baseline + side`, else `Baseline`) and its z for AUC and GAUC."""

    def stats(rs: list[Run], m: str) -> tuple[float, float]:
        values = []
        for r in rs:
            s = r.warm if which == "warm" else r.cold
            assert s is not None
            values.append(s.metrics[m])
        return _mean_std(values)

    by = _by_label(runs)
    ref = by.get(_reference_row(runs), [])
    base = {m: stats(ref, m) for m in METRICS} if ref else {}
    rows = []
    for name, rs in by.items():
        cells, deltas, zs = [], [], []
        for m in METRICS:
            mean, std = stats(rs, m)
            cells.append(f"{mean:.4f} +- {std:.4f}")
            if not base:
                continue
            d, spread = mean - base[m][0], float(np.hypot(std, base[m][1]))
            deltas.append(f"{d:+.4f}")
            if m != "uauc":
                zs.append(f"{d / spread:+.1f}" if spread > 0 and rs is not ref else "")
        rows.append([name, *cells, *deltas, *zs])
    headers = ["variant", "AUC", "UAUC", "GAUC"]
    if base:
        headers += ["dAUC", "dUAUC", "dGAUC", "z AUC", "z GAUC"]
    return _results_table(headers, rows)


def _groups_table(runs: list[Run], split: Split) -> list[str]:
    counts = np.bincount(split.popularity[split.test.item], minlength=N_POPULARITY_GROUPS)
    rows = [["test samples", *(str(int(c)) for c in counts)]]
    for name, rs in _by_label(runs).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        rows.append([name, *(f"{m:.4f}" for m in means)])
    headers = ["variant", *(f"L{g + 1}" for g in range(N_POPULARITY_GROUPS))]
    return [
        "## AUC by item popularity group (L1 least .. L6 most frequent in training; warm items)",
        "",
        _results_table(headers, rows),
    ]


def _sweep_table(runs: list[Run], data: EvalData) -> list[str]:
    """The codebook-size sweep on the validation slice, one row per (L, Nc)."""
    chosen = data.size
    rows = []
    for size in sorted({r.size for r in runs if r.size is not None}):
        rs = [r for r in runs if r.size == size]
        mark = "**chosen**" if size == chosen else ""
        gauc = [r.cold.metrics["gauc"] for r in rs if r.cold is not None]
        total = _mean_std([r.auc("warm") + r.auc("cold") for r in rs])[0]
        rows.append(
            [
                str(size[0]),
                str(size[1]),
                _cell([r.auc("warm") for r in rs]),
                _cell([r.auc("cold") for r in rs]),
                _cell(gauc),
                f"{total:.4f}",
                mark,
            ]
        )
    name = label(runs[0].rank)
    seeds = sorted({r.rank.seed for r in runs})
    headers = ["L", "Nc", "val warm AUC", "val cold AUC", "val cold GAUC", "warm + cold", ""]
    return [
        "## Codes sized to the catalog: the L x Nc sweep (validation slice, never the test)",
        "",
        f"`{name}` (seeds {seeds}) trained on the training period minus its own latest events "
        "(each user's latest share of training events) and minus a seeded share of warm items "
        "made cold for validation; each size's codebooks built by `codebooks.build` from the "
        "bundle's vectors of the remaining warm items, the validation-cold ones encoded as "
        "uploads. The size with the highest validation warm + cold AUC is used in every table "
        "above and below.",
        "",
        _results_table(headers, rows),
    ]


def _encoders_table(main: list[Run], others: list[Run]) -> list[str]:
    """Seed spread of the headline rows: per encoder (bundle), and over all encoders x seeds."""
    versions = list(dict.fromkeys([*(r.bundle for r in main), *(r.bundle for r in others)]))
    every = main + others
    rows = []
    for name, rs in _by_label(others).items():
        rs = [r for r in every if label(r.rank) == name]
        cells = []
        for which in WHICH:
            cells += [_cell([r.auc(which) for r in rs if r.bundle == v]) for v in versions]
            cells.append(_cell([r.auc(which) for r in rs]))
        gauc = [r.cold.metrics["gauc"] for r in rs if r.cold is not None]
        rows.append([name, *cells, _cell(gauc)])
    headers = ["variant"]
    for which in WHICH:
        headers += [f"{which} AUC enc {i}" for i in range(len(versions))] + [f"{which} AUC all"]
    headers.append("cold GAUC all")
    seeds = sorted({r.rank.seed for r in every})
    return [
        "## Seed spread: ranker seeds x encoder seeds",
        "",
        f"The headline rows on {len(versions)} aligned encoders (the same pipeline and holdout, "
        f"another seed for the encoder's init and its alignment: "
        f"{', '.join(f'enc {i} = `{v}`' for i, v in enumerate(versions))}) x ranker seeds "
        f"{seeds}; `all` is the mean +- std over every encoder and seed.",
        "",
        _results_table(headers, rows),
    ]


def _versus_table(a: list[Run], b: list[Run], names: tuple[str, str]) -> str:
    """Warm and cold AUC of the rows `b` ran, side by side with the same rows of `a`."""
    x, y = names
    by_a = _by_label(a)
    rows = []
    for name, rs in _by_label(b).items():
        cells = []
        for which in WHICH:
            cells += [_cell([r.auc(which) for r in runs]) for runs in (by_a.get(name, []), rs)]
        rows.append([name, *cells])
    headers = ["variant", f"warm AUC {x}", f"warm AUC {y}", f"cold AUC {x}", f"cold AUC {y}"]
    return _results_table(headers, rows)


def _ablation_tables(runs: list[Run], config: EvalConfig) -> list[str]:
    seeds = sorted({r.rank.seed for r in runs})
    lines = [f"## Ablations (paper Tables 7 and 8; seeds {seeds})"]
    prefix = "+side " if runs and runs[0].rank.side else "+"
    studies = (
        ("k", f"{prefix}VQ Code with K =", config.ks),
        ("width", f"{prefix}RQ Code with code width =", config.code_dims),
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
    if not len(a) or np.all(np.isnan(a)):
        return float("nan"), float("nan")
    return float(np.nanmean(a)), float(np.nanstd(a))


def _by_label(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by row name, in the order the rows first appear."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(label(r.rank), []).append(r)
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
    by = _by_label(main)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="tight")
    for ax, which in zip(axes, WHICH, strict=True):
        stats = [_mean_std([r.auc(which) for r in rs]) for rs in by.values()]
        ax.bar(range(len(by)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=3)
        ax.set_xticks(range(len(by)), list(by), rotation=60, ha="right", fontsize=7)
        finite = [m for m, _ in stats if np.isfinite(m)]
        if finite:
            ax.set_ylim(min(finite) - 0.02, max(finite) + 0.01)
        ax.set_title(f"{which} items: test AUC (mean +- std over seeds)", fontsize=9)
    paths.append(save_figure(fig, out.with_name(f"{out.stem}-variants.png"), DPI))

    fig, ax = plt.subplots(figsize=(7, 4), layout="tight")
    for name, rs in _by_label(main).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        ax.plot(range(1, N_POPULARITY_GROUPS + 1), means, marker="o", label=name)
    ax.set_xlabel("popularity group (L1 least frequent)")
    ax.set_ylabel("test AUC (warm items)")
    ax.legend(fontsize=6, ncol=2)
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
