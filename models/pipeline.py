"""The offline pipeline: log + content -> pairs -> aligned encoder -> catalog embeddings ->
codebooks build -> ONE bundle, with the encoder, its tokenizer and the alignment report inside.

Order of work: mine pairs; embed the catalog with the pre-trained encoder (the "before");
align; embed again (the "after"); export the aligned encoder to ONNX and check parity; quantise
to int8 and keep it only if it agrees with fp32; then `codebooks.build` writes the bundle with
`extra_files` and the manifest's `encoder` section. Reports (JSON, Markdown, PNG) go to
`report_dir`, outside the immutable bundle tree, and a copy of the JSON rides in the bundle.

With a `Holdout` (the ranking evaluation's runs) the pipeline learns from the past of warm items
only: pairs are mined on `Holdout.training_events`, the codebooks are built on warm items, and
the cold items are embedded by the exported ONNX graph, as the service would embed a new
upload, into `holdout.npz` inside the bundle.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from catalogs.content import Catalog
from catalogs.files import Files, load_files
from catalogs.holdout import HOLDOUT_FILE, ColdItems, Holdout, save_cold_items
from catalogs.interactions import Interactions
from catalogs.movielens import movielens_files
from catalogs.synthetic import SyntheticCatalog, synthetic_catalog, synthetic_interactions
from codebooks.build import BuildConfig, build, train_codebooks
from codebooks.embeddings import checked
from codebooks.encoder_spec import EncoderSpec
from codebooks.stages import stage
from codebooks.summary import table
from models.align import (
    AlignConfig,
    AlignResult,
    InputsFn,
    catalog_inputs,
    distributed,
    embed,
    feature_inputs,
    text_features,
    train,
)
from models.encoder import EncoderConfig, FeatureEncoder, MultimodalEncoder, load_tokenizer
from models.export import (
    ENCODER_FILE,
    INT8_FILE,
    TOKENIZER_FILE,
    Int8Agreement,
    encoder_spec,
    export_onnx,
    int8_agreement,
    max_abs_diff,
    quantize_int8,
    random_inputs,
    run_onnx,
    session,
    write_tokenizer,
)
from models.pairs import MinedPairs, PairArray, PairConfig, future_pairs, mine_pairs
from models.quality import confounder_gap, neighbour_purity, pair_recall, plot_maps

log = logging.getLogger(__name__)

REPORT_FILE = "alignment.json"
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PipelineConfig:
    data: Literal["synthetic", "movielens", "files"] = "synthetic"
    out: Path = Path("artifacts")  # bundle root: the bundle is written to out/<version>/
    report_dir: Path | None = None  # reports, checkpoints, media cache; default data/runs/<data>
    data_dir: Path = Path("data/ml-100k")  # MovieLens-100k in the training schema (`make data`)
    files: Files | None = None  # data="files": the user's items and events (docs/data.md)
    mode: Literal["multimodal", "features"] = "multimodal"
    features: Path | None = None  # features mode: (N, F) .npy upstream embeddings by row
    items: int = 5000  # synthetic catalog size
    events: int = 300_000  # synthetic interaction log size
    groups: int = 32  # synthetic business groups
    seed: int = 0
    int8: bool = True  # try the int8 variant (kept only if it agrees with fp32)
    int8_check_items: int = 2000  # catalog items embedded by the int8 graph for the check
    holdout: Holdout | None = None  # learn from the past of warm items only (evaluation runs)
    pairs: PairConfig = field(default_factory=PairConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    build: BuildConfig = field(default_factory=BuildConfig)

    @property
    def reports(self) -> Path:
        return self.report_dir or Path("data/runs") / self.data


@dataclass(frozen=True)
class PipelineResult:
    bundle: Path
    report: dict[str, Any]


def load_data(config: PipelineConfig) -> tuple[Catalog, Interactions]:
    """The catalog and its log: generated (synthetic), or read and checked through the
    training schema (MovieLens, a user's files), refusing bad files before any training."""
    if config.data == "synthetic":
        catalog = synthetic_catalog(config.items, n_groups=config.groups, seed=config.seed)
        return catalog, synthetic_interactions(catalog, config.events, seed=config.seed)
    files = movielens_files(config.data_dir) if config.data == "movielens" else config.files
    if files is None:
        raise ValueError("data='files' needs `files` (the items and events Parquet files)")
    return load_files(files, config.reports / "media", progress=config.align.progress)


@dataclass(frozen=True)
class Mined:
    """The data and the pairs an encoder learns from."""

    catalog: Catalog
    events: Interactions  # what the encoder may learn from (with a holdout: warm items' past)
    warm: npt.NDArray[np.bool_]  # (N,) catalog rows the codebooks are built on
    pairs: MinedPairs
    future: PairArray | None  # with a holdout: pairs from after the training period


def mine(config: PipelineConfig) -> Mined:
    catalog, whole_log = load_data(config)
    n = len(catalog)
    if config.holdout is None:
        pairs = mine_pairs(whole_log, n, config.pairs)
        return Mined(catalog, whole_log, np.ones(n, dtype=bool), pairs, None)
    events = whole_log.take(config.holdout.training_events(whole_log, n))
    pairs = mine_pairs(events, n, config.pairs)
    future = future_pairs(whole_log, n, config.pairs, pairs)
    log.info("%d pairs from after the training period", len(future))
    return Mined(catalog, events, ~config.holdout.cold_items(n), pairs, future)


def encoder_and_inputs(
    config: PipelineConfig, catalog: Catalog, tokenizer: Any
) -> tuple[MultimodalEncoder | FeatureEncoder, InputsFn]:
    """The encoder to align and how catalog rows become its inputs (a frozen text tower's
    vectors are computed once here and cached)."""
    if config.mode == "features":
        upstream = _upstream_features(config, catalog, tokenizer)
        return FeatureEncoder(upstream.shape[1], config.encoder), feature_inputs(upstream)
    model = MultimodalEncoder(config.encoder)
    cache = (
        text_features(model, catalog, tokenizer, progress=config.align.progress)
        if model.text_frozen
        else None
    )
    return model, catalog_inputs(catalog, tokenizer, cache)


def run(config: PipelineConfig) -> PipelineResult | None:
    """Run every stage and write one bundle; returns its path and the report.

    Under torchrun every process mines, embeds and trains (DDP); only rank 0 exports and
    builds, and the other ranks return None.
    """
    seconds: dict[str, float] = {}
    torch.manual_seed(config.seed)
    with stage("data_and_pairs", seconds, log):
        mined = mine(config)
    n = len(mined.catalog)
    with stage("embed_before", seconds, log):
        torch.manual_seed(config.seed)  # the encoder's init must not depend on what mining drew
        tokenizer = load_tokenizer(config.encoder.max_text_tokens)
        model, inputs_fn = encoder_and_inputs(config, mined.catalog, tokenizer)
        before = _embed(model, inputs_fn, n, config.align)
        quality_before = _quality(before, mined)
    with stage("align", seconds, log):
        align = replace(config.align, checkpoint_dir=config.reports / "checkpoints")
        result = train(model, inputs_fn, mined.pairs.train, align)
    if distributed()[0] != 0:
        return None
    with stage("embed_after", seconds, log):
        after = _embed(model, inputs_fn, n, config.align)
        quality_after = _quality(after, mined)
        png = plot_maps(
            before,
            after,
            mined.catalog.groups,
            config.reports / f"alignment-{config.data}.png",
            title=f"{config.data}: item embeddings by {_grouped_by(config)}",
        )
    report = _report(config, mined, quality_before, quality_after, result, png)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with stage("export", seconds, log):
            exported = _export(config, model, mined.catalog, tokenizer, inputs_fn, after, tmp)
        report.update(exported.report, seconds=dict(seconds))  # the bundle's copy: no build
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        extra = {**exported.files, REPORT_FILE: tmp / REPORT_FILE}
        if config.holdout is not None:
            cold = ~mined.warm
            extra[HOLDOUT_FILE] = write_holdout(
                config.holdout, mined.catalog.ids, cold, extra[ENCODER_FILE], inputs_fn, tmp
            )
        with stage("build", seconds, log):
            bundle = build(
                mined.catalog.ids[mined.warm],
                after[mined.warm],
                config.build,
                config.out,
                extra_files=extra,
                encoder=exported.spec,
            )
    report.update(seconds=seconds, bundle=str(bundle))
    _write_reports(config.reports, report)
    return PipelineResult(bundle=bundle, report=report)


def _report(
    config: PipelineConfig,
    mined: Mined,
    before: dict[str, float],
    after: dict[str, float],
    result: AlignResult,
    png: Path,
) -> dict[str, Any]:
    """The alignment report's body: data, pairs, quality before and after, training."""
    future = {"future": len(mined.future)} if mined.future is not None else {}
    return {
        "data": config.data,
        "mode": config.mode,
        "items": len(mined.catalog),
        "events": len(mined.events),
        "pairs": {**mined.pairs.counts, **future},
        "before": before,
        "after": after,
        "align": {
            "steps": result.steps_done,
            "pairs_per_s": round(result.pairs_per_s, 1),
            "first_loss": result.losses[0] if result.losses else None,
            "last_loss": result.losses[-1] if result.losses else None,
        },
        "map": str(png),
        "config": _jsonable(asdict(config)),
    }


def _embed(
    model: MultimodalEncoder | FeatureEncoder, inputs_fn: InputsFn, n: int, align: AlignConfig
) -> npt.NDArray[np.float32]:
    return embed(
        model, inputs_fn, n, align.embed_batch, align.workers, align.prefetch, align.progress
    )


def _grouped_by(config: PipelineConfig) -> str:
    if config.data == "synthetic":
        return "business group"
    files = config.files if config.data == "files" else movielens_files(config.data_dir)
    return f"`{files.group_column}`" if files and files.group_column else "(no group column)"


@dataclass(frozen=True)
class Exported:
    files: dict[str, Path]  # bundle file name -> the file written in the run's temp folder
    spec: EncoderSpec  # the manifest's encoder section
    report: dict[str, Any]  # parity and int8 agreement, for the alignment report


def _export(
    config: PipelineConfig,
    model: MultimodalEncoder | FeatureEncoder,
    catalog: Catalog,
    tokenizer: Any,
    inputs_fn: InputsFn,
    after: npt.NDArray[np.float32],
    tmp: Path,
) -> Exported:
    """Export, check parity (refuse > 1e-4), try int8."""
    rows = np.arange(min(32, len(catalog)))
    real = {k: v for k, v in inputs_fn(rows).items() if k != "text"}
    if isinstance(model, FeatureEncoder):
        rand = {
            "features": torch.randn(
                17, model.n_features, generator=torch.Generator().manual_seed(0)
            )
        }
    else:
        rand = random_inputs(config.encoder, 17, config.encoder.max_text_tokens, seed=config.seed)
    onnx_path = export_onnx(model, tmp / ENCODER_FILE, real)
    sess = session(onnx_path)
    parity = {"real": max_abs_diff(model, sess, real), "random": max_abs_diff(model, sess, rand)}
    report: dict[str, Any] = {"parity_max_abs_diff": parity}
    if max(parity.values()) > PARITY_TOLERANCE:
        raise RuntimeError(f"{onnx_path}: ONNX differs from torch by {parity} > {PARITY_TOLERANCE}")
    extra = {ENCODER_FILE: onnx_path}
    if not isinstance(model, FeatureEncoder):
        extra[TOKENIZER_FILE] = write_tokenizer(tokenizer, tmp / TOKENIZER_FILE)

    keep_int8 = False
    if config.int8:
        int8_path = quantize_int8(onnx_path, tmp / INT8_FILE)
        agreement = _int8_check(config, int8_path, inputs_fn, after)
        keep_int8 = agreement.kept
        report["int8"] = {**asdict(agreement), "kept": keep_int8}
        if keep_int8:
            extra[INT8_FILE] = int8_path
    n_features = model.n_features if isinstance(model, FeatureEncoder) else None
    spec = encoder_spec(config.encoder, int8=keep_int8, mode=config.mode, n_features=n_features)
    return Exported(extra, spec, report)


def _int8_check(
    config: PipelineConfig, int8_path: Path, inputs_fn: InputsFn, after: npt.NDArray[np.float32]
) -> Int8Agreement:
    """Embed a seeded sample of the catalog with the int8 graph and compare with fp32, on the
    RQ codebooks the build will train (same items, levels, size, seed)."""
    n = len(after)
    rng = np.random.default_rng((config.seed, 5))
    rows = np.sort(rng.choice(n, size=min(n, config.int8_check_items), replace=False))
    int8 = onnx_embed(session(int8_path), inputs_fn, rows)
    books = train_codebooks(checked(after, after.shape[1]), config.build)
    return int8_agreement(after[rows], int8, books)


def onnx_embed(
    sess: Any, inputs_fn: InputsFn, rows: npt.NDArray[np.int64], batch: int = 256
) -> npt.NDArray[np.float32]:
    """(len(rows), d) catalog rows embedded by an exported graph, from the same inputs the
    torch model saw (the raw text is not a graph input)."""
    parts = [
        run_onnx(sess, {k: v for k, v in inputs_fn(rows[i : i + batch]).items() if k != "text"})
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def write_holdout(
    holdout: Holdout,
    ids: npt.NDArray[np.str_],
    cold: npt.NDArray[np.bool_],
    onnx_path: Path,
    inputs_fn: InputsFn,
    tmp: Path,
) -> Path:
    """`holdout.npz`: the Holdout settings, and the cold items' ids and embeddings from the
    exported fp32 graph, so a ranking evaluation scores them as the service would see them."""
    rows = np.flatnonzero(cold).astype(np.int64)
    emb = onnx_embed(session(onnx_path), inputs_fn, rows)
    return save_cold_items(tmp / HOLDOUT_FILE, ColdItems(holdout, ids[rows], emb))


def _upstream_features(
    config: PipelineConfig, catalog: Catalog, tokenizer: Any
) -> npt.NDArray[np.float32]:
    """Features mode: the given (N, F) table, or else frozen pre-trained MiniLM text vectors."""
    if config.features is not None:
        table: npt.NDArray[np.float32] = np.load(config.features).astype(np.float32)
        if table.ndim != 2 or len(table) != len(catalog):
            raise ValueError(
                f"{config.features}: shape {table.shape}, expected ({len(catalog)}, F)"
            )
        return table
    upstream = MultimodalEncoder(replace(config.encoder, train_text_layers=0))
    return text_features(upstream, catalog, tokenizer).numpy()


def _quality(emb: npt.NDArray[np.float32], mined: Mined) -> dict[str, float]:
    """Recall of held-out pairs (and, with a holdout, of the pairs from after the training
    period), and how many of an item's 10 nearest share its group (and, on synthetic data, its
    content style: the confounder that alignment should see through)."""
    catalog = mined.catalog
    out = pair_recall(emb, mined.pairs.held_out)
    if mined.future is not None:
        out.update({f"future {k}": v for k, v in pair_recall(emb, mined.future).items()})
    if len(np.unique(catalog.groups)) > 1:
        out["group_purity@10"] = neighbour_purity(emb, catalog.groups)
    if isinstance(catalog, SyntheticCatalog):
        out["style_purity@10"] = neighbour_purity(emb, catalog.style)
        out.update(confounder_gap(emb, catalog))
    return {k: round(v, 4) for k, v in out.items()}


def _write_reports(folder: Path, report: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    (folder / "alignment.md").write_text(markdown_table(report))


def markdown_table(report: dict[str, Any]) -> str:
    """The before/after table of a run, as it goes into docs/."""
    b, a = report["before"], report["after"]
    rows = [[key, f"{b[key]:.4f}", f"{a[key]:.4f}"] for key in b]
    pairs = report["pairs"]
    return "\n".join(
        [
            f"{report['data']} ({report['mode']}): {report['items']} items, "
            f"{report['events']} events, {pairs['train']} training pairs, "
            f"{pairs['held_out']} held out"
            + (f", {pairs['future']} from after the training period" if "future" in pairs else ""),
            "",
            table(["metric", "before", "after"], rows, align="lll", pad=False),
            "",
        ]
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value
