"""Item codes for the ranking model, read through `codebooks` (never through the service).

For every catalog row we need its VQ code (K row ids into the bundle's VQ codebook), its RQ code
(L centroid ids) and its aligned embedding (the `+IA Rep` input). The bundle keeps the catalog's
vectors inside its VQ index, so the embeddings are read back from there and encoded with the
same `Quantizer` the service runs; the RQ codes it returns are checked against the bundle's own.
Cold items are not in the bundle's catalog: their vectors come from the bundle's `holdout.npz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from catalogs.holdout import HOLDOUT_FILE, ColdItems, load_cold_items, save_cold_items
from codebooks import BuildConfig, Bundle, Quantizer, build, load_bundle

Int32Array = npt.NDArray[np.int32]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ItemCodes:
    """Codes of N catalog rows. vq: (N, K) int32 < n_vq. rq: (N, L) int32 < n_rq.
    embedding: (N, d) float32, L2-normalised. vq_rows: (n_vq,) int64, the catalog row of each
    VQ codebook entry (-1: not in this catalog), so a code can name the items it points at;
    None where unknown (hand-made codes in tests)."""

    vq: Int32Array
    rq: Int32Array
    embedding: Float32Array
    n_vq: int  # size of the VQ codebook (bundle items)
    n_rq: int  # centroids per RQ level (Nc)
    vq_rows: npt.NDArray[np.int64] | None = None

    def vq_similarity(self) -> Float32Array:
        """(N, K) inner product of each item with each item its VQ code names (the VQ search's
        own score, as the embeddings are L2-normalised). Raises ValueError without vq_rows."""
        if self.vq_rows is None:
            raise ValueError("these codes do not say which catalog rows their VQ entries are")
        rows = self.vq_rows[self.vq]  # (N, K)
        if np.any(rows < 0):
            raise ValueError(f"{int((rows < 0).sum())} VQ entries name items outside the catalog")
        sim = np.einsum("nd,nkd->nk", self.embedding, self.embedding[rows])
        return np.asarray(sim, dtype=np.float32)


def quantized(bundle: Bundle, embedding: Float32Array, ids: npt.NDArray[np.str_]) -> ItemCodes:
    """Codes of N catalog rows (`ids`, their vectors `embedding`) under `bundle`'s codebooks,
    encoded by the `Quantizer` the service runs."""
    vq, rq = Quantizer(bundle, gpu="off").encode(embedding)
    row_of = {str(item_id): i for i, item_id in enumerate(ids)}
    vq_rows = np.array([row_of.get(str(i), -1) for i in bundle.item_ids], dtype=np.int64)
    return ItemCodes(
        vq=vq,
        rq=rq,
        embedding=embedding,
        n_vq=len(bundle.item_ids),
        n_rq=bundle.manifest.centroids,
        vq_rows=vq_rows,
    )


def bundle_embeddings(bundle: Bundle) -> Float32Array:
    """(N, d) the catalog vectors of the bundle's VQ codebook, in `item_ids` order."""
    out: Float32Array = np.ascontiguousarray(
        bundle.catalog_vectors(0, bundle.manifest.n_items), dtype=np.float32
    )
    return out


def item_codes(bundle: Bundle, catalog_ids: npt.NDArray[np.str_]) -> ItemCodes:
    """Codes of every catalog row, matched by item id to the bundle's catalog or, for the cold
    items of an evaluation bundle, to its `holdout.npz`; all encoded by one `Quantizer`, so a
    cold item's VQ code points at its nearest warm items, as a new upload's would.

    Raises ValueError naming the first catalog id found in neither.
    """
    cold = load_cold_items(bundle.path)
    known_ids = [*bundle.item_ids, *(cold.ids if cold is not None else [])]
    row_of = {str(item_id): i for i, item_id in enumerate(known_ids)}
    missing = [str(i) for i in catalog_ids if str(i) not in row_of]
    if missing:
        raise ValueError(
            f"{bundle.path}: {len(missing)} catalog items are neither in the bundle nor in its "
            f"holdout, e.g. {missing[0]}"
        )
    vectors = bundle_embeddings(bundle)
    if cold is not None:
        vectors = np.concatenate([vectors, cold.embeddings])
    rows = np.array([row_of[str(i)] for i in catalog_ids], dtype=np.int64)
    codes = quantized(bundle, vectors[rows], catalog_ids)
    in_bundle = rows < len(bundle.item_ids)
    if not np.array_equal(codes.rq[in_bundle], bundle.rq_codes[rows[in_bundle]]):
        raise ValueError(f"{bundle.path}: re-encoded RQ codes differ from rq_codes.npy")
    return codes


def build_config(bundle: Bundle, **changes: int) -> BuildConfig:
    """The build settings `bundle` was made with (K, L, Nc, seed, RQ method, balance), with
    `changes` (levels=, centroids=) applied, on the CPU."""
    m = bundle.manifest
    settings: dict[str, object] = {
        "k": m.k,
        "levels": m.levels,
        "centroids": m.centroids,
        "seed": m.rq.seed,
        "niter": m.rq.niter,
        "method": m.rq.method,
        "beam_size": m.rq.beam_size or 1,
        "balance": m.rq.balance,
        "balance_target": m.rq.balance_target or BuildConfig().balance_target,
        "gpu": "off",
    }
    return BuildConfig.model_validate({**settings, **changes})


def resized_codes(
    bundle: Bundle,
    codes: ItemCodes,
    ids: npt.NDArray[np.str_],
    in_codebook: npt.NDArray[np.bool_],
    root: Path,
    *,
    levels: int,
    centroids: int,
) -> ItemCodes:
    """The codes the real build gives with L = `levels` and Nc = `centroids`: a bundle built by
    `codebooks.build` from the rows `in_codebook` (their vectors `codes.embedding`, the other
    settings `bundle`'s), and every row encoded by its `Quantizer`, so rows outside the
    codebook get the codes a new upload would. Raises ValueError from the build (e.g. Nc larger
    than the rows it trains on)."""
    config = build_config(bundle, levels=levels, centroids=centroids)
    path = build(ids[in_codebook], codes.embedding[in_codebook], config, root)
    return quantized(load_bundle(path), codes.embedding, ids)


def random_codes_bundle(bundle: Bundle, root: Path, seed: int = 0, **changes: int) -> Path:
    """A control bundle under `root`: the same items (warm and cold), shapes and RQ settings as
    `bundle` (with `changes`: levels=, centroids=), built from random Gaussian vectors. Its
    codes have the same capacity in a ranker (tables, lengths, collisions about as often) and
    no meaning, so what they add is what the extra parameters alone add."""
    m = bundle.manifest
    cold = load_cold_items(bundle.path)
    rng = np.random.default_rng(seed)
    extra = {}
    if cold is not None:
        noise = rng.standard_normal(cold.embeddings.shape).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        root.mkdir(parents=True, exist_ok=True)
        held = ColdItems(cold.holdout, cold.ids, noise)
        extra[HOLDOUT_FILE] = save_cold_items(root / HOLDOUT_FILE, held)
    vectors = rng.standard_normal((m.n_items, m.dim)).astype(np.float32)
    config = build_config(bundle, **changes)
    return build(bundle.item_ids, vectors, config, root / "bundles", extra_files=extra)
