"""Item codes for the ranking model, read through `codebooks` (never through the service).

For every catalog row we need its VQ code (K row ids into the bundle's VQ codebook), its RQ code
(L centroid ids) and its aligned embedding (the `+IA Rep` input). The bundle keeps the catalog's
vectors inside its VQ index, so the embeddings are read back from there and encoded with the
same `Quantizer` the service runs; the RQ codes it returns are checked against the bundle's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codebooks import Bundle, Quantizer

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
    """(N, d) the catalog vectors stored in the bundle's VQ index, in `item_ids` order."""
    index = bundle.vq_index
    try:
        x = index.reconstruct_n(0, index.ntotal)
    except RuntimeError:  # IVF indexes reconstruct only with a direct map
        import faiss

        faiss.extract_index_ivf(index).make_direct_map()
        x = index.reconstruct_n(0, index.ntotal)
    out: Float32Array = np.ascontiguousarray(x, dtype=np.float32)
    return out


def item_codes(bundle: Bundle, catalog_ids: npt.NDArray[np.str_]) -> ItemCodes:
    """Codes of every catalog row, matched to the bundle by item id.

    Raises ValueError naming the first catalog id the bundle does not hold (a cold item would
    need the encoder; that path is not built yet).
    """
    row_of = {str(item_id): i for i, item_id in enumerate(bundle.item_ids)}
    missing = [str(i) for i in catalog_ids if str(i) not in row_of]
    if missing:
        raise ValueError(
            f"{bundle.path}: {len(missing)} catalog items are not in the bundle, e.g. {missing[0]}"
        )
    rows = np.array([row_of[str(i)] for i in catalog_ids], dtype=np.int64)
    emb = bundle_embeddings(bundle)[rows]
    vq, rq = Quantizer(bundle, gpu="off").encode(emb)
    if not np.array_equal(rq, bundle.rq_codes[rows]):
        raise ValueError(f"{bundle.path}: re-encoded RQ codes differ from rq_codes.npy")
    return ItemCodes(
        vq=vq, rq=rq, embedding=emb, n_vq=len(bundle.item_ids), n_rq=bundle.manifest.centroids
    )
