"""VQ codes: the codebook is every catalog item's vector; a code is the top-K rows by inner product.

Up to `exact_max_items` the index is exact (faiss flat). Above it, an IVF-Flat index whose
`nprobe` is tuned at build time: the smallest value whose recall@K against exact search,
on a seeded sample of catalog rows as queries (each leaving itself out, as a new upload would
not find itself), reaches the target. The recall reached is
written into the manifest. IVF-Flat (rather than HNSW) because faiss runs it on the GPU too, so
the GPU and CPU builds take one code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from codebooks.device import to_gpu
from codebooks.embeddings import Float32Array
from codebooks.rq import Int32Array

VQKind = Literal["flat", "ivf"]


@dataclass(frozen=True)
class VQIndexInfo:
    kind: VQKind
    nlist: int | None  # IVF lists; None for flat
    nprobe: int | None  # IVF lists searched per query; None for flat
    recall_at_k: float | None  # measured against exact search; None when exact
    recall_queries: int  # catalog rows used as leave-self-out queries (0 when exact)


def choose_kind(
    n_items: int, requested: Literal["auto", "flat", "ivf"], exact_max_items: int
) -> VQKind:
    if requested != "auto":
        return requested
    return "flat" if n_items <= exact_max_items else "ivf"


def default_nlist(n_items: int) -> int:
    """About 4 sqrt(N) lists, a power of two, with at least 39 training items per list."""
    target = 2 ** round(math.log2(max(4.0 * math.sqrt(n_items), 1.0)))
    return int(max(1, min(target, 65536, n_items // 39)))


def build_vq_index(
    x: Float32Array,
    k: int,
    *,
    kind: VQKind,
    target_recall: float = 0.95,
    recall_queries: int = 1000,
    seed: int = 0,
    gpu: bool = False,
) -> tuple[Any, VQIndexInfo]:
    """n-by-d normalised float32 -> a CPU faiss index over all rows (row i is item i)."""
    n, dim = x.shape
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        return index, VQIndexInfo("flat", None, None, None, 0)

    nlist = default_nlist(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 64
    index.train(x)
    index.add(x)

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(recall_queries, n), replace=False))
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    truth = _without_self(search(to_gpu(exact) if gpu else exact, x[rows], k + 1), rows)
    searcher = to_gpu(index) if gpu else index

    def recall_at(probe: int) -> float:
        set_nprobe(searcher, probe)
        return recall_at_k(_without_self(search(searcher, x[rows], k + 1), rows), truth)

    nprobe = next(
        (2**p for p in range(int(math.log2(nlist)) + 1) if recall_at(2**p) >= target_recall), nlist
    )
    low = nprobe // 2  # recall rises with nprobe: bisect (low, nprobe] for the smallest that passes
    while nprobe - low > 1:
        mid = (low + nprobe) // 2
        low, nprobe = (low, mid) if recall_at(mid) >= target_recall else (mid, nprobe)
    recall = recall_at(nprobe)
    set_nprobe(index, nprobe)
    return index, VQIndexInfo("ivf", nlist, nprobe, recall, len(rows))


def _without_self(found: Int32Array, rows: npt.NDArray[np.int64]) -> Int32Array:
    """Top-(k+1) of catalog rows -> their top-k among the *other* rows.

    A catalog row always finds itself, which a new upload cannot do; leaving it out makes the
    measured recall that of new items from the same distribution.
    """
    k = found.shape[1] - 1
    keep = found != rows[:, None]
    out = np.empty((len(found), k), dtype=np.int32)
    for i, (ids, mask) in enumerate(zip(found, keep, strict=True)):
        out[i] = ids[mask][:k]
    return out


def set_nprobe(index: Any, nprobe: int) -> None:
    """Works on CPU and GPU IVF indexes alike."""
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)


def search(index: Any, queries: Float32Array, k: int) -> Int32Array:
    """Top-k row ids, nearest first, as int32 (-1 where the index holds fewer than k rows)."""
    _, ids = index.search(queries, k)
    out: Int32Array = ids.astype(np.int32)
    return out


def search_exhaustively(index: Any, queries: Float32Array, k: int) -> Int32Array:
    """`search` over every list of an IVF index (per call: the shared index is not changed);
    a plain search for any other index."""
    nlist = getattr(index, "nlist", None)
    if nlist is None:
        return search(index, queries, k)
    params = faiss.SearchParametersIVF()
    params.nprobe = int(nlist)
    _, ids = index.search(queries, k, params=params)
    out: Int32Array = ids.astype(np.int32)
    return out


def recall_at_k(found: Int32Array, truth: Int32Array) -> float:
    """Mean share of each query's true top-K that the approximate top-K found."""
    from faiss.contrib.evaluation import knn_intersection_measure

    return float(knn_intersection_measure(found, truth))  # type: ignore[no-untyped-call]


def ensure_direct_map(index: Any) -> None:
    """Let an IVF index read rows back by id (a flat index always can). Not thread-safe:
    call it before the index is shared."""
    if getattr(index, "nlist", None) is not None and index.direct_map.type == 0:
        faiss.extract_index_ivf(index).make_direct_map()


def catalog_vectors(index: Any, start: int, stop: int) -> Float32Array:
    """Rows start..stop-1 of the VQ codebook, (stop - start)-by-d float32, read back from the
    index (see `ensure_direct_map`)."""
    ensure_direct_map(index)
    out: Float32Array = index.reconstruct_n(start, stop - start)
    return out


def rerank(index: Any, queries: Float32Array, found: Int32Array, k: int) -> Int32Array:
    """B-by-m candidate rows (-1: none) -> B-by-k int32, best first by inner product computed
    in float64 over the rows read back from `index`; ties go to the lower row."""
    valid = found >= 0
    vectors = np.zeros((*found.shape, queries.shape[1]), dtype=np.float64)
    vectors[valid] = index.reconstruct_batch(found[valid].astype(np.int64))
    scores = np.einsum("bmd,bd->bm", vectors, queries.astype(np.float64))
    scores[~valid] = -np.inf
    order = np.lexsort((np.where(valid, found, np.iinfo(np.int32).max), -scores), axis=1)
    out: Int32Array = np.take_along_axis(found, order[:, :k], axis=1).astype(np.int32)
    return out
