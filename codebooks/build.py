"""Build a bundle from catalog embeddings: RQ codebooks, the VQ index, codes and metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from codebooks.bundle import (
    ITEM_IDS,
    RQ_BIAS,
    RQ_CENTROIDS,
    RQ_CODES,
    SID_SUFFIX,
    VQ_VECTORS,
    BuildMetrics,
    RQManifest,
    VQManifest,
    write_bundle,
)
from codebooks.device import GpuMode, use_gpu
from codebooks.embeddings import Float32Array, checked
from codebooks.encoder_spec import EncoderSpec
from codebooks.metrics import collision_metrics, level_metrics
from codebooks.rq import ResidualCodebooks, rq_encode
from codebooks.rq_train import train_faiss_rq, train_residual_kmeans
from codebooks.sid import assign_suffixes
from codebooks.stages import stage
from codebooks.vq import COMPRESSED, VQIndexInfo, VQRequest, VQSettings, build_vq_index, choose_kind

log = logging.getLogger(__name__)


class BuildConfig(BaseModel):
    """Every knob of a build; the shapes default to the QARM paper's (K=25, L=6, Nc=256).

    The RQ method defaults to faiss-rq rather than the paper's greedy k-means: on the same
    data it gives lower error and far fewer colliding tuples (docs/benchmarks.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(25, ge=1, description="nearest items in a VQ code")
    levels: int = Field(6, ge=1, le=32, description="RQ levels (L)")
    centroids: int = Field(256, ge=2, le=65536, description="centroids per RQ level (Nc)")
    seed: int = Field(0, ge=0, description="seeds sampling and every k-means")
    niter: int = Field(20, ge=1, description="k-means iterations per level")
    train_items: int = Field(
        65536, ge=2, description="items sampled to train the RQ codebooks; all items are assigned"
    )
    method: Literal["kmeans", "faiss-rq"] = Field(
        "faiss-rq", description="RQ training: faiss's ResidualQuantizer, or greedy residual k-means"
    )
    beam_size: int = Field(
        1, ge=1, description="faiss-rq training beam (codes are assigned greedily)"
    )
    balance: Literal["none", "sinkhorn"] = Field(
        "none", description="per-level balanced assignment (Sinkhorn potentials as a centroid bias)"
    )
    balance_target: float = Field(
        0.85, gt=0, le=1, description="with sinkhorn: least perplexity per level, as a share of Nc"
    )
    vq_index: VQRequest = Field(
        "auto",
        description="auto: exact flat up to exact_max_items; above, the fastest kind that "
        "reaches target_recall, measured",
    )
    exact_max_items: int = Field(100_000, ge=1, description="largest catalog auto searches exactly")
    target_recall: float = Field(
        0.98, gt=0, le=1, description="VQ recall@K on upload-like queries that tuning must reach"
    )
    recall_queries: int = Field(
        2000, ge=1, description="catalog rows held out to measure VQ recall@K (at most N/10)"
    )
    hnsw_m: int = Field(32, ge=4, le=256, description="hnsw: links per node")
    hnsw_ef_construction: int = Field(40, ge=8, description="hnsw: search breadth while building")
    pq_bytes: int = Field(0, ge=0, description="ivf-pq: bytes of code per item; 0: d/2")
    vq_memory_gb: float = Field(
        0.0, ge=0, description="auto: skip kinds whose index needs more; 0: half of this machine's"
    )
    gpu: GpuMode = Field("auto", description="faiss on the GPU: auto, on or off")


def build(
    ids: npt.NDArray[np.str_],
    embeddings: Float32Array,
    config: BuildConfig,
    out_root: Path,
    *,
    progress: bool = False,
    extra_files: Mapping[str, Path] | None = None,
    encoder: EncoderSpec | None = None,
    upload_queries: Float32Array | None = None,
) -> Path:
    """Build and write one bundle version under `out_root`; return its folder.

    `embeddings` is N-by-d float32 (normalised here); `ids[i]` names row i. `extra_files`
    (the encoder, the tokenizer) and the `encoder` input spec are carried into the bundle.
    `upload_queries` (M-by-d, e.g. embeddings of recent uploads kept out of the catalog) tune
    an approximate VQ index instead of held-out catalog rows.
    """
    n, dim = embeddings.shape
    if len(ids) != n:
        raise ValueError(f"ids: {len(ids)} ids for {n} embeddings")
    if n < max(config.k, config.centroids):
        raise ValueError(
            f"embeddings: {n} items, a build needs at least max(k={config.k}, "
            f"centroids={config.centroids})"
        )
    x = checked(embeddings, dim)
    queries = (
        None if upload_queries is None else checked(upload_queries, dim, what="upload queries")
    )
    gpu = use_gpu(config.gpu)
    seconds: dict[str, float] = {}

    with stage("rq_train", seconds, log):
        books = train_codebooks(x, config, gpu=gpu, progress=progress)
    with stage("rq_assign", seconds, log):
        encoding = rq_encode(x, books)
        suffix = assign_suffixes(encoding.codes)
    with stage("vq_index", seconds, log):
        kind = choose_kind(n, config.vq_index, config.exact_max_items)
        index, vq_info = build_vq_index(x, kind, vq_settings(config, gpu), queries=queries)
    with stage("metrics", seconds, log):
        levels = level_metrics(encoding.codes, config.centroids, encoding.level_mse)
        collisions = collision_metrics(encoding.codes)

    manifest_fields = {
        "dim": dim,
        "k": config.k,
        "levels": config.levels,
        "centroids": config.centroids,
        "n_items": n,
        "vq": _vq_manifest(config, vq_info),
        "rq": _rq_manifest(config, n),
        "metrics": BuildMetrics(
            levels=levels,
            collisions=collisions,
            max_suffix=int(suffix.max()),
            suffix_depth=1,
            seconds=seconds,
        ),
        "encoder": encoder,
    }
    arrays = {
        ITEM_IDS: ids.astype(str),
        RQ_CENTROIDS: books.centroids,
        RQ_BIAS: books.bias,
        RQ_CODES: encoding.codes,
        SID_SUFFIX: suffix,
    }
    if vq_info.kind in COMPRESSED:  # the index keeps codes; the exact re-rank reads these
        arrays[VQ_VECTORS] = x
    return write_bundle(
        out_root,
        arrays=arrays,
        vq_index=index,
        manifest_fields=manifest_fields,
        extra_files=extra_files,
    )


def vq_settings(config: BuildConfig, gpu: bool) -> VQSettings:
    """The VQ part of a build config; a memory budget of 0 is half of this machine's memory."""
    budget = config.vq_memory_gb * 2**30 or _memory_bytes() / 2
    return VQSettings(
        k=config.k,
        target_recall=config.target_recall,
        recall_queries=config.recall_queries,
        hnsw_m=config.hnsw_m,
        hnsw_ef_construction=config.hnsw_ef_construction,
        pq_bytes=config.pq_bytes,
        memory_bytes=budget,
        seed=config.seed,
        gpu=gpu,
    )


def _memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _vq_manifest(config: BuildConfig, info: VQIndexInfo) -> VQManifest:
    """What the manifest says of the VQ index: its kind, search setting and measured recall."""
    return VQManifest(
        **info.chosen.model_dump(),
        target_recall=config.target_recall,
        recall_queries=info.recall_queries,
        recall_source=info.recall_source,
        candidates=info.candidates,
    )


def _rq_manifest(config: BuildConfig, n: int) -> RQManifest:
    """How the RQ codebooks were trained; settings that did not apply are recorded as null."""
    return RQManifest(
        method=config.method,
        balance=config.balance,
        balance_target=config.balance_target if config.balance == "sinkhorn" else None,
        beam_size=config.beam_size if config.method == "faiss-rq" else None,
        niter=config.niter,
        train_items=min(n, config.train_items),
        seed=config.seed,
    )


def train_codebooks(
    x: Float32Array, config: BuildConfig, *, gpu: bool = False, progress: bool = False
) -> ResidualCodebooks:
    """The RQ codebooks that a build with `config` trains on normalised `x` (N, d): the same
    seeded sample of `train_items` rows, the same method and balance."""
    n = len(x)
    rng = np.random.default_rng(config.seed)
    sample = x[np.sort(rng.choice(n, size=min(n, config.train_items), replace=False))]
    return _train_rq(sample, config, gpu=gpu, progress=progress)


def _train_rq(
    sample: Float32Array, config: BuildConfig, *, gpu: bool, progress: bool
) -> ResidualCodebooks:
    target = config.balance_target if config.balance == "sinkhorn" else None
    if config.method == "faiss-rq":
        return train_faiss_rq(
            sample,
            config.levels,
            config.centroids,
            seed=config.seed,
            beam_size=config.beam_size,
            niter=config.niter,
            balance_target=target,
            progress=progress,
        )
    return train_residual_kmeans(
        sample,
        config.levels,
        config.centroids,
        seed=config.seed,
        niter=config.niter,
        balance_target=target,
        gpu=gpu,
        progress=progress,
    )
