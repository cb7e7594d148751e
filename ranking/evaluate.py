"""The evaluation: every variant, several seeds, scored on what the bundle held out; the
report in the shape of the paper's tables is `ranking.report`'s.

Data comes from the loaders on the ground floor (MovieLens-100k, or the seeded synthetic catalog
and log the bundle was built from); codes come from the bundle through `codebooks`. What is held
out (each user's latest events, the cold items) is the bundle's own `Holdout`, so the encoder
that made the codes never learnt from an event this report scores.

The codebook size (L levels of Nc centroids) is chosen before any test sample is scored, on a
validation slice carved from the training samples alone (`validation_split`: each user's latest
training events, and a seeded share of warm items made cold for it): every size of the sweep is
built by `codebooks.build` from the bundle's own vectors without the validation-cold items,
which are then encoded as uploads, and one ranker variant is trained on the rest.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from catalogs.files import Files, load_files
from catalogs.holdout import Holdout, load_cold_items
from catalogs.interactions import Interactions
from catalogs.movielens import movielens_files
from catalogs.synthetic import synthetic_catalog, synthetic_interactions
from codebooks import Bundle, load_bundle
from ranking.codes import ItemCodes, item_codes, random_codes_bundle, resized_codes
from ranking.data import N_POPULARITY_GROUPS, Samples, Split, make_split
from ranking.features import SideFeatures, movielens_features, synthetic_features
from ranking.metrics import auc, gauc, uauc
from ranking.model import REFERENCES, VARIANTS, RankConfig, Variant, predict, train_ranker
from ranking.references import Predict, train_dcn, train_lr
from ranking.report import write_report

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (L levels, Nc centroids per level) of the RQ codebooks
DETERMINISTIC: tuple[Variant, ...] = ("lr", "lrcodes")  # one fit: seeds change nothing (lbfgs)
# The cold-path rows (on top of side features): (variant, pooled neighbour IDs, ID dropout)
ColdPath = tuple[Variant, bool, float]


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
    side: bool = True  # also run every variant with the data set's side features (`+side`)
    references: bool = True  # with side: the LR and DCN references on the same samples
    cold_paths: tuple[ColdPath, ...] = (
        ("base", False, 0.1),  # ID dropout without codes: what the side features alone give
        ("vq", True, 0.1),
    )
    # The code variants (with side, if any) run again on the other bundles: `compare`'s and
    # `encoders`'; and on random codes (the control). Fewer than every variant, for time.
    headline: tuple[Variant, ...] = ("vq", "vqrq")
    control_variants: tuple[Variant, ...] = ("vqrq",)
    encoders: tuple[Path, ...] = ()  # bundles of other encoder seeds, same holdout: the spread
    sweep_levels: tuple[int, ...] = (2, 3, 6)  # L values of the codebook-size sweep
    sweep_centroids: tuple[int, ...] = (16, 32, 64, 256)  # Nc values; either empty: no sweep
    sweep_variant: Variant = "rq"  # the ranker variant (with side, if any) that scores a size
    sweep_seeds: tuple[int, ...] = (0,)
    workers: int = 1  # processes running the plan's runs (see `runner_for`)


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]  # auc, uauc, gauc (NaN where a set has one class)
    auc_by_group: list[float]  # AUC of samples whose item is in L1..L6 (NaN: one class)


Which = Literal["warm", "cold"]  # test samples of items seen in training, or of cold items
# The table a run belongs to: main: the aligned bundle; unaligned: the compare bundle; random:
# the random-codes control; encoder: another encoder seed's bundle; sweep: a codebook size on
# the validation slice; k, width: the ablations
Study = Literal["main", "unaligned", "random", "encoder", "sweep", "k", "width"]


@dataclass(frozen=True)
class Run:
    rank: RankConfig  # variant, seed, and any ablated setting
    study: Study  # main: the aligned bundle; unaligned: the compare bundle; random: the
    # random-codes control; k, width: the ablations
    warm: Scores  # the latest events of items seen in training
    cold: Scores | None  # the latest events of cold items; None without cold items
    seconds: float
    bundle: str = ""  # the version of the bundle whose codes it used
    size: Size | None = None  # (L, Nc) of its RQ codes

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
    features: SideFeatures | None = None  # the data set's side features, if it has any
    size: Size | None = None  # (L, Nc) of `codes`

    @property
    def in_codebook(self) -> np.ndarray:
        """(n_items,) bool: the catalog rows in the VQ codebook (the bundle's warm items)."""
        mask = np.zeros(self.n_items, dtype=bool)
        if self.codes.vq_rows is not None:
            mask[self.codes.vq_rows[self.codes.vq_rows >= 0]] = True
        return mask


Task = tuple[EvalData, RankConfig, Study]  # one run_one call
Runner = Callable[[list[Task]], list[Run]]  # runs a plan, returns its runs in plan order


def load_events(config: EvalConfig) -> tuple[np.ndarray, Interactions, SideFeatures | None]:
    """(catalog ids, Interactions, side features) of the chosen data set; files are checked as
    the pipeline checks them (media are not read: the ranker sees ids, events and features).
    A user's own files have no side features here (None)."""
    if config.data != "synthetic":
        files = movielens_files(config.data_dir) if config.data == "movielens" else config.files
        if files is None:
            raise ValueError("data='files' needs `files` (the items and events Parquet files)")
        opened, events = load_files(files, None, progress=False)
        side = movielens_features(files, opened.ids) if config.data == "movielens" else None
        return opened.ids, events, side
    c = _synthetic_settings(config)
    catalog = synthetic_catalog(c.items, n_groups=c.groups, seed=c.data_seed)
    events = synthetic_interactions(catalog, c.events, seed=c.data_seed)
    return catalog.ids, events, synthetic_features(catalog)


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
    ids, events, features = load_events(config)
    holdout = bundle_holdout(config.bundle, config.test_share)
    split = make_split(events, len(ids), holdout, history=config.history)
    n_users = int(events.user.max()) + 1
    bundle = load_bundle(config.bundle)
    codes = item_codes(bundle, ids)
    size = (bundle.manifest.levels, bundle.manifest.centroids)
    data = EvalData(split, codes, n_users, len(ids), bundle.version, holdout, features, size)
    return data, ids


def with_codes(data: EvalData, ids: np.ndarray, path: Path, size: Size | None = None) -> EvalData:
    """The same samples with another bundle's codes (rebuilt at `size` if given and not the
    bundle's own); that bundle must hold out the same."""
    holdout = bundle_holdout(path, data.holdout.test_share)
    if holdout != data.holdout:
        raise ValueError(
            f"{path}: holdout {holdout} differs from the evaluated bundle's {data.holdout}; "
            "build both with the same --holdout and --seed"
        )
    bundle = load_bundle(path)
    other = replace(
        data,
        codes=item_codes(bundle, ids),
        version=bundle.version,
        size=(bundle.manifest.levels, bundle.manifest.centroids),
    )
    return resized(other, bundle, ids, size) if size is not None else other


def resized(data: EvalData, bundle: Bundle, ids: np.ndarray, size: Size) -> EvalData:
    """`data` with its bundle's codebooks rebuilt at `size` from the same warm items' vectors
    (the cold items encoded as uploads); unchanged if `size` is the bundle's own."""
    if size == data.size:
        return data
    with tempfile.TemporaryDirectory() as tmp:
        codes = resized_codes(
            bundle, data.codes, ids, data.in_codebook, Path(tmp), levels=size[0], centroids=size[1]
        )
    return replace(data, codes=codes, size=size)


def validation_split(data: EvalData, history: int) -> tuple[Split, Holdout]:
    """A validation slice carved from the training samples alone, by the test's own rule one
    step back: each user's latest `test_share` of training events is validated on, and a
    seeded `cold_share` of items (seed + 1) is cold for it. Nothing of the test is read."""
    h = data.holdout
    val = Holdout(h.test_share, h.cold_share, seed=h.seed + 1)
    t = data.split.train
    past = Interactions(t.user, t.item, t.ts, t.label)
    return make_split(past, data.n_items, val, history=history), val


def sweep_sizes(
    data: EvalData, ids: np.ndarray, bundle: Bundle, config: EvalConfig, runner: Runner
) -> tuple[Size | None, list[Run]]:
    """Every (L, Nc) of the sweep on the validation slice: its codebooks built from the
    bundle's warm vectors minus the validation-cold items, `config.sweep_variant` trained on the
    validation past. The chosen size maximises validation warm AUC + cold AUC (a size that buys
    cold AUC with warm AUC is not preferred), ties to the smaller Nc, then L. Sizes whose Nc
    exceeds the items the codebooks train on are skipped. (None, []) without a sweep."""
    split, val = validation_split(data, config.history)
    in_codebook = data.in_codebook & ~val.cold_items(data.n_items)
    n = int(in_codebook.sum())
    sizes = [(lv, nc) for lv in config.sweep_levels for nc in config.sweep_centroids if nc <= n]
    skipped = [nc for nc in config.sweep_centroids if nc > n]
    if skipped:
        log.warning(
            "sweep: Nc %s skipped, more than the %d items the codebooks train on", skipped, n
        )
    if not sizes:
        return None, []
    side = config.side and data.features is not None
    rank = replace(config.rank, variant=config.sweep_variant, side=side)
    plan: list[Task] = []
    with tempfile.TemporaryDirectory() as tmp:
        for levels, centroids in sizes:
            codes = resized_codes(
                bundle, data.codes, ids, in_codebook, Path(tmp), levels=levels, centroids=centroids
            )
            trial = replace(data, split=split, codes=codes, size=(levels, centroids))
            plan += [(trial, replace(rank, seed=s), "sweep") for s in config.sweep_seeds]
    runs = runner(plan)

    def merit(size: Size) -> tuple[float, int, int]:
        rs = [r for r in runs if r.size == size]
        total = float(np.mean([r.auc("warm") + r.auc("cold") for r in rs]))
        return (total, -size[1], -size[0])

    return max(sizes, key=merit), runs


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


def trained(data: EvalData, rank: RankConfig) -> Predict:
    """Train `rank`'s model (the DIN ranker, or a reference) on the training samples."""
    split = data.split
    if (rank.variant in REFERENCES or rank.side) and data.features is None:
        raise ValueError(f"variant {rank.variant!r} needs side features; this data has none")
    if rank.variant in ("lr", "lrcodes"):
        assert data.features is not None
        codes = data.codes if rank.variant == "lrcodes" else None
        return train_lr(split.train, data.n_users, data.n_items, data.features, rank.seed, codes)
    if rank.variant == "dcn":
        assert data.features is not None
        return train_dcn(split.train, data.n_users, data.n_items, data.features, rank)
    model = train_ranker(split.train, data.n_users, data.n_items, data.codes, rank, data.features)
    return lambda samples: predict(model, samples)


def run_one(data: EvalData, rank: RankConfig, study: Study = "main") -> Run:
    """Train one variant with one seed and score it on the warm and the cold test samples."""
    t0 = time.perf_counter()
    split = data.split
    model = trained(data, rank)
    warm = score(split.test, model(split.test), split.popularity)
    cold = None
    if len(split.cold_test):
        cold = score(split.cold_test, model(split.cold_test), split.popularity)
    run = Run(rank, study, warm, cold, time.perf_counter() - t0, data.version, data.size)
    log.info(
        "%s %s side=%s pool=%s drop=%s size=%s seed %d: warm %s cold %s (%.1f s)",
        study,
        rank.variant,
        rank.side,
        rank.cold_pool,
        rank.id_dropout,
        data.size,
        rank.seed,
        {k: round(v, 4) for k, v in warm.metrics.items()},
        {k: round(v, 4) for k, v in cold.metrics.items()} if cold else None,
        run.seconds,
    )
    return run


def main_rows(config: EvalConfig, has_side: bool) -> list[RankConfig]:
    """The rows of the main tables, in order: the ID-only variants; with side features, every
    variant again with them, the cold-path rows and the references."""
    r = config.rank
    rows = [replace(r, variant=v) for v in config.variants]
    if config.side and has_side:
        rows += [replace(r, variant=v, side=True) for v in config.variants]
        rows += [
            replace(r, variant=v, side=True, cold_pool=pool, id_dropout=drop)
            for v, pool, drop in config.cold_paths
        ]
        if config.references:
            rows += [replace(r, variant=v, side=True) for v in REFERENCES]
    return rows


def evaluate(config: EvalConfig) -> list[Run]:
    """The sweep (choosing the codebook size on the validation slice), then every row x seed;
    with `compare`, the code variants again on the unaligned bundle's codes; with `encoders`,
    on other encoder seeds'; the random-codes control; the K and code-width ablations; the
    report and its plots when `config.out`."""
    with runner_for(config) as runner:
        return _evaluate(config, runner)


def _evaluate(config: EvalConfig, runner: Runner) -> list[Run]:
    data, ids = prepare(config)
    bundle = load_bundle(config.bundle)
    size, sweep = sweep_sizes(data, ids, bundle, config, runner)
    if size is not None:
        log.info("codebook size chosen on the validation slice: L=%d Nc=%d", *size)
        data = resized(data, bundle, ids, size)
    side = config.side and data.features is not None
    plan: list[Task] = [
        (data, replace(row, seed=s), "main")
        for row in main_rows(config, data.features is not None)
        for s in (config.seeds[:1] if row.variant in DETERMINISTIC else config.seeds)
    ]
    headline = [replace(config.rank, variant=v, side=side) for v in config.headline]
    others: list[tuple[Path, Study]] = [(p, "encoder") for p in config.encoders]
    if config.compare is not None:
        others.append((config.compare, "unaligned"))
    for path, study in others:
        other = with_codes(data, ids, path, size)
        plan += [(other, replace(row, seed=s), study) for row in headline for s in config.seeds]
    if config.control:
        changes = {"levels": size[0], "centroids": size[1]} if size is not None else {}
        with tempfile.TemporaryDirectory() as tmp:
            control = with_codes(data, ids, random_codes_bundle(bundle, Path(tmp), **changes))
        plan += [
            (control, replace(row, seed=s), "random")
            for row in headline
            if row.variant in config.control_variants
            for s in config.seeds
        ]
    for s in config.ablation_seeds:
        rank = replace(config.rank, side=side, seed=s)
        plan += [(data, replace(rank, variant="vq", k=k), "k") for k in config.ks]
        plan += [(data, replace(rank, variant="rq", code_dim=d), "width") for d in config.code_dims]
    runs = sweep + runner(plan)
    if config.out is not None:
        write_report(config, runs, data)
    return runs


@contextmanager
def runner_for(config: EvalConfig) -> Iterator[Runner]:
    """How the plan's runs are executed: in this process with `workers` 1; otherwise in that
    many spawned processes of one torch thread each (on 2 cores, two single-threaded runs side
    by side finish sooner than two 2-thread runs one after the other: the ranker's steps are
    too small to keep two threads busy). Every run seeds itself, so the results do not depend
    on the worker that ran them beyond float summation order."""
    bar = partial(tqdm, desc="ranking runs", disable=not config.progress)
    if config.workers <= 1:
        yield lambda plan: [run_one(*task) for task in bar(plan)]
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(config.workers, context, initializer=_worker_init) as pool:

        def run(plan: list[Task]) -> list[Run]:
            futures = [pool.submit(run_one, *task) for task in plan]
            return [f.result() for f in bar(futures)]

        yield run


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
