"""The evaluation: every variant, several seeds, one report in the shape of the paper's tables.

Data comes from the loaders on the ground floor (MovieLens-100k, or the seeded synthetic catalog
and log the bundle was built from); codes come from the bundle through `codebooks`. What is held
out (each user's latest events, the cold items) is the bundle's own `Holdout`, so the encoder
that made the codes never learnt from an event this report scores.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from catalogs.files import Files, load_files
from catalogs.holdout import Holdout, load_cold_items
from catalogs.interactions import Interactions
from catalogs.movielens import movielens_files
from catalogs.synthetic import synthetic_catalog, synthetic_interactions
from codebooks import load_bundle
from ranking.codes import ItemCodes, item_codes, random_codes_bundle
from ranking.data import N_POPULARITY_GROUPS, Samples, Split, make_split
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
CODE_VARIANTS: tuple[Variant, ...] = ("ia", "vq", "rq", "vqrq")  # the ones a bundle changes
CONTROL_VARIANTS: tuple[Variant, ...] = ("rq", "vqrq")  # run again on random codes


@dataclass(frozen=True)
class EvalConfig:
    data: Literal["movielens", "synthetic", "files"]
    bundle: Path  # artifacts/<version>: the codes (aligned encoder)
    files: Files | None = None  # data="files": the user's items and events (docs/data.md)
    compare: Path | None = None  # a bundle of the unaligned encoder, same Holdout: is it worth it?
    control: bool = True  # also run CONTROL_VARIANTS on random codes of the same shapes
    data_dir: Path = Path("data/ml-100k")  # MovieLens-100k in the training schema (`make data`)
    items: int = 5000  # synthetic: catalog size, business groups, events and seed; read from
    groups: int = 32  # the bundle's alignment.json when it has one, so they match the bundle
    events: int = 300_000
    data_seed: int = 0
    history: int = 50  # latest positives in the history feature
    test_share: float = 0.2  # for a bundle without a holdout: each user's latest share is tested
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[Variant, ...] = VARIANTS
    rank: RankConfig = field(default_factory=RankConfig)
    ks: tuple[int, ...] = (5, 10, 15, 20, 25)  # Table 7: VQ codes used (+VQ Code)
    code_dims: tuple[int, ...] = (16, 32, 64)  # Table 8: code embedding width (+RQ Code)
    ablation_seeds: tuple[int, ...] = (0,)  # empty: no ablation tables
    out: Path | None = Path("docs/results.md")  # None: return the results only
    progress: bool = True


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]  # auc, uauc, gauc (NaN where a set has one class)
    auc_by_group: list[float]  # AUC of samples whose item is in L1..L6 (NaN: one class)


Which = Literal["warm", "cold"]  # test samples of items seen in training, or of cold items
WHICH: tuple[Which, ...] = ("warm", "cold")
Study = Literal["main", "unaligned", "random", "k", "width"]  # the table a run belongs to


@dataclass(frozen=True)
class Run:
    rank: RankConfig  # variant, seed, and any ablated setting
    study: Study  # main: the aligned bundle; unaligned: the compare bundle; random: the
    # random-codes control; k, width: the ablations
    warm: Scores  # the latest events of items seen in training
    cold: Scores | None  # the latest events of cold items; None without cold items
    seconds: float

    @property
    def variant(self) -> Variant:
        return self.rank.variant

    @property
    def setting(self) -> int | None:
        """The ablated value: K for the k study, the code width for the width study."""
        return self.rank.k if self.study == "k" else self.rank.code_dim

    def auc(self, which: Which) -> float:
        s = self.warm if which == "warm" else self.cold
        return s.metrics["auc"] if s is not None else float("nan")


@dataclass(frozen=True)
class Prepared:
    split: Split
    codes: ItemCodes
    n_users: int
    n_items: int
    version: str  # the bundle's
    holdout: Holdout


def load_events(config: EvalConfig) -> tuple[np.ndarray, Interactions]:
    """(catalog ids, Interactions) of the chosen data set; files are checked as the pipeline
    checks them (media are not read: the ranker sees ids and events)."""
    if config.data != "synthetic":
        files = movielens_files(config.data_dir) if config.data == "movielens" else config.files
        if files is None:
            raise ValueError("data='files' needs `files` (the items and events Parquet files)")
        opened, events = load_files(files, None, progress=False)
        return opened.ids, events
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


def bundle_holdout(bundle: Path, test_share: float) -> Holdout:
    """The bundle's Holdout; a bundle built without one holds out time only, no cold items."""
    cold = load_cold_items(bundle)
    return cold.holdout if cold is not None else Holdout(test_share=test_share, cold_share=0.0)


def prepare(config: EvalConfig) -> tuple[Prepared, np.ndarray]:
    """Load the log and `config.bundle`'s codes, and split the log; also the catalog ids, for
    `with_codes`."""
    ids, events = load_events(config)
    holdout = bundle_holdout(config.bundle, config.test_share)
    split = make_split(events, len(ids), holdout, history=config.history)
    n_users = int(events.user.max()) + 1
    bundle = load_bundle(config.bundle)
    codes = item_codes(bundle, ids)
    return Prepared(split, codes, n_users, len(ids), bundle.version, holdout), ids


def with_codes(data: Prepared, ids: np.ndarray, path: Path) -> Prepared:
    """The same samples with another bundle's codes; that bundle must hold out the same."""
    holdout = bundle_holdout(path, data.holdout.test_share)
    if holdout != data.holdout:
        raise ValueError(
            f"{path}: holdout {holdout} differs from the evaluated bundle's {data.holdout}; "
            "build both with the same --holdout and --seed"
        )
    bundle = load_bundle(path)
    return replace(data, codes=item_codes(bundle, ids), version=bundle.version)


def score(samples: Samples, probs: np.ndarray, popularity: np.ndarray) -> Scores:
    """AUC, UAUC, GAUC of a sample set, and AUC per popularity group of the target item."""
    metrics = {
        "auc": _auc_or_nan(samples.label, probs),
        "uauc": uauc(samples.user, samples.label, probs) if len(samples) else float("nan"),
        "gauc": gauc(samples.user, samples.label, probs) if len(samples) else float("nan"),
    }
    group = popularity[samples.item]
    by_group = [
        _auc_or_nan(samples.label[group == g], probs[group == g])
        for g in range(N_POPULARITY_GROUPS)
    ]
    return Scores(metrics, by_group)


def _auc_or_nan(label: np.ndarray, probs: np.ndarray) -> float:
    return auc(label, probs) if 0 < label.sum() < len(label) else float("nan")


def run_one(data: Prepared, rank: RankConfig, study: Study = "main") -> Run:
    """Train one variant with one seed and score it on the warm and the cold test samples."""
    t0 = time.perf_counter()
    split = data.split
    model = train_ranker(split.train, data.n_users, data.n_items, data.codes, rank)
    warm = score(split.test, predict(model, split.test), split.popularity)
    cold = None
    if len(split.cold_test):
        cold = score(split.cold_test, predict(model, split.cold_test), split.popularity)
    run = Run(rank, study, warm, cold, time.perf_counter() - t0)
    log.info(
        "%s %s seed %d: %s (%.1f s)", study, rank.variant, rank.seed, warm.metrics, run.seconds
    )
    return run


def evaluate(config: EvalConfig) -> list[Run]:
    """Every variant x seed; with `compare`, the code variants again on the unaligned bundle's
    codes; the K and code-width ablations; the report and its plots when `config.out`."""
    data, ids = prepare(config)
    plan: list[tuple[Prepared, RankConfig, Study]] = [
        (data, replace(config.rank, variant=v, seed=s), "main")
        for v in config.variants
        for s in config.seeds
    ]
    if config.compare is not None:
        other = with_codes(data, ids, config.compare)
        plan += [
            (other, replace(config.rank, variant=v, seed=s), "unaligned")
            for v in config.variants
            if v in CODE_VARIANTS
            for s in config.seeds
        ]
    if config.control:
        with tempfile.TemporaryDirectory() as tmp:
            control = with_codes(
                data, ids, random_codes_bundle(load_bundle(config.bundle), Path(tmp))
            )
        plan += [
            (control, replace(config.rank, variant=v, seed=s), "random")
            for v in config.variants
            if v in CONTROL_VARIANTS
            for s in config.seeds
        ]
    for s in config.ablation_seeds:
        plan += [(data, replace(config.rank, variant="vq", k=k, seed=s), "k") for k in config.ks]
        plan += [
            (data, replace(config.rank, variant="rq", code_dim=d, seed=s), "width")
            for d in config.code_dims
        ]
    runs = [
        run_one(d, rank, study)
        for d, rank, study in tqdm(plan, desc="ranking runs", disable=not config.progress)
    ]
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(report(config, runs, data))
        plot(runs, config.out)
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.array(values, dtype=np.float64)
    if np.all(np.isnan(a)):
        return float("nan"), float("nan")
    return float(np.nanmean(a)), float(np.nanstd(a))


def _table(runs: list[Run], which: Which) -> list[str]:
    """Mean +- std of AUC/UAUC/GAUC per variant, and the mean's delta against Baseline."""

    def scores(r: Run) -> Scores:
        s = r.warm if which == "warm" else r.cold
        assert s is not None
        return s

    by = _by_variant(runs)
    base = {m: _mean_std([scores(r).metrics[m] for r in by.get("base", [])])[0] for m in METRICS}
    lines = [
        "| variant | AUC | UAUC | GAUC | dAUC | dUAUC | dGAUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, rs in by.items():
        cells, deltas = [], []
        for m in METRICS:
            mean, std = _mean_std([scores(r).metrics[m] for r in rs])
            cells.append(f"{mean:.4f} +- {std:.4f}")
            deltas.append(f"{mean - base[m]:+.4f}" if "base" in by else "")
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells + deltas) + " |")
    return lines


def _by_variant(runs: list[Run]) -> dict[Variant, list[Run]]:
    out: dict[Variant, list[Run]] = {}
    for r in runs:
        out.setdefault(r.variant, []).append(r)
    return out


def report(config: EvalConfig, runs: list[Run], data: Prepared) -> str:
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
        *_table(main, "warm"),
    ]
    if all(r.cold is not None for r in main):
        lines += ["", "## Cold-start items (never seen in training)", "", *_table(main, "cold")]
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
            lines += ["", f"## {title}", "", text, "", *_versus_table(main, other, names)]
    ablated = [r for r in runs if r.study in ("k", "width")]
    if ablated:
        lines += ["", *_ablation_tables(ablated, config)]
    lines.append("")
    return "\n".join(lines)


def _groups_table(runs: list[Run], split: Split) -> list[str]:
    counts = np.bincount(split.popularity[split.test.item], minlength=N_POPULARITY_GROUPS)
    lines = [
        "## AUC by item popularity group (L1 least .. L6 most frequent in training; warm items)",
        "",
        "| variant | " + " | ".join(f"L{g + 1}" for g in range(N_POPULARITY_GROUPS)) + " |",
        "|---|" + "---|" * N_POPULARITY_GROUPS,
        "| test samples | " + " | ".join(str(int(c)) for c in counts) + " |",
    ]
    for v, rs in _by_variant(runs).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        lines.append(f"| {LABELS[v]} | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    return lines


def _versus_table(a: list[Run], b: list[Run], names: tuple[str, str]) -> list[str]:
    """Warm and cold AUC of the variants `b` ran, side by side with the same variants of `a`."""
    x, y = names
    lines = [
        f"| variant | warm AUC {x} | warm AUC {y} | cold AUC {x} | cold AUC {y} |",
        "|---|---|---|---|---|",
    ]
    by_a, by_b = _by_variant(a), _by_variant(b)
    for v, rs in by_b.items():
        cells = []
        for which in WHICH:
            cells += [_cell([r.auc(which) for r in runs]) for runs in (by_a[v], rs)]
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells) + " |")
    return lines


def _ablation_tables(runs: list[Run], config: EvalConfig) -> list[str]:
    seeds = sorted({r.rank.seed for r in runs})
    lines = [f"## Ablations (paper Tables 7 and 8; seeds {seeds})"]
    studies = (
        ("k", "+VQ Code with K =", config.ks),
        ("width", "+RQ Code with code width =", config.code_dims),
    )
    for study, header, values in studies:
        lines += ["", f"| {header} | warm AUC | warm GAUC | cold AUC |", "|---|---|---|---|"]
        for value in values:
            rs = [r for r in runs if r.study == study and r.setting == value]
            lines.append(f"| {value} | " + " | ".join(_cells3(rs)) + " |")
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
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, which in zip(axes, WHICH, strict=True):
        stats = [_mean_std([r.auc(which) for r in rs]) for rs in by.values()]
        ax.bar(range(len(by)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=3)
        ax.set_xticks(range(len(by)), [LABELS[v] for v in by], rotation=20, fontsize=8)
        finite = [m for m, _ in stats if np.isfinite(m)]
        if finite:
            ax.set_ylim(min(finite) - 0.02, max(finite) + 0.01)
        ax.set_title(f"{which} items: test AUC (mean +- std over seeds)", fontsize=9)
    paths.append(_save(fig, out.with_name(f"{out.stem}-variants.png")))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for v, rs in _by_variant(main).items():
        means = np.nanmean(np.array([r.warm.auc_by_group for r in rs]), axis=0)
        ax.plot(range(1, N_POPULARITY_GROUPS + 1), means, marker="o", label=LABELS[v])
    ax.set_xlabel("popularity group (L1 least frequent)")
    ax.set_ylabel("test AUC (warm items)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out.with_name(f"{out.stem}-groups.png")))

    ablated = {study: [r for r in runs if r.study == study] for study in ("k", "width")}
    if any(ablated.values()):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, (study, rs) in zip(axes, ablated.items(), strict=True):
            xs = sorted({r.setting or 0 for r in rs})
            for which in WHICH:
                ys = [_mean_std([r.auc(which) for r in rs if r.setting == x])[0] for x in xs]
                ax.plot(xs, ys, marker="o", label=f"{which} items")
            ax.set_xlabel("VQ codes K (+VQ Code)" if study == "k" else "code width (+RQ Code)")
            ax.set_ylabel("test AUC")
            ax.legend(fontsize=8)
        paths.append(_save(fig, out.with_name(f"{out.stem}-ablations.png")))
    return paths


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=120)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
