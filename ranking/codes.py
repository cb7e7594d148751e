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
from codebooks import BuildConfig, Bundle, Quantizer, build

Int32Array = npt.NDArray[np.int32]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ItemCodes:
    """Codes of N catalog rows. vq: (N, K) int32 < n_vq. rq: (N, L) int32 < n_rq.
    embedding: (N, d) float32, L2-normalised."""

    vq: Int32Array
    rq: Int32Array
    embedding: Float32Array
    n_vq: int  # size of the VQ codebook (bundle items)
    n_rq: int  # centroids per RQ level (Nc)


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
    emb = vectors[rows]
    vq, rq = Quantizer(bundle, gpu="off").encode(emb)
    in_bundle = rows < len(bundle.item_ids)
    if not np.array_equal(rq[in_bundle], bundle.rq_codes[rows[in_bundle]]):
        raise ValueError(f"{bundle.path}: re-encoded RQ codes differ from rq_codes.npy")
    return ItemCodes(
        vq=vq, rq=rq, embedding=emb, n_vq=len(bundle.item_ids), n_rq=bundle.manifest.centroids
    )


def random_codes_bundle(bundle: Bundle, root: Path, seed: int = 0) -> Path:
    """A control bundle under `root`: the same items (warm and cold), shapes and RQ settings as
    `bundle`, built from random Gaussian vectors. Its codes have the same capacity in a ranker
    (tables, lengths, collisions about as often) and no meaning, so what they add is what the
    extra parameters alone add."""
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
    config = BuildConfig(
        k=m.k,
        levels=m.levels,
        centroids=m.centroids,
        seed=m.rq.seed,
        niter=m.rq.niter,
        method=m.rq.method,
        beam_size=m.rq.beam_size or 1,
        balance=m.rq.balance,
        balance_target=m.rq.balance_target or BuildConfig().balance_target,
        gpu="off",
    )
    vectors = rng.standard_normal((m.n_items, m.dim)).astype(np.float32)
    return build(bundle.item_ids, vectors, config, root / "bundles", extra_files=extra)
