"""The evaluation: every variant, several seeds, scored on what the bundle held out; the
report in the shape of the paper's tables is `ranking.report`'s.

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
from ranking.report import write_report

log = logging.getLogger(__name__)

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
class EvalData:
    """What every run of one evaluation shares: the split log, the bundle's codes of every
    catalog item, and where they came from."""

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


def prepare(config: EvalConfig) -> tuple[EvalData, np.ndarray]:
    """Load the log and `config.bundle`'s codes, and split the log; also the catalog ids, for
    `with_codes`."""
    ids, events = load_events(config)
    holdout = bundle_holdout(config.bundle, config.test_share)
    split = make_split(events, len(ids), holdout, history=config.history)
    n_users = int(events.user.max()) + 1
    bundle = load_bundle(config.bundle)
    codes = item_codes(bundle, ids)
    return EvalData(split, codes, n_users, len(ids), bundle.version, holdout), ids


def with_codes(data: EvalData, ids: np.ndarray, path: Path) -> EvalData:
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


def run_one(data: EvalData, rank: RankConfig, study: Study = "main") -> Run:
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
    plan: list[tuple[EvalData, RankConfig, Study]] = [
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
        write_report(config, runs, data)
    return runs
