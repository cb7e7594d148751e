"""Training the RQ codebooks: greedy residual k-means (the paper's) or faiss's ResidualQuantizer.

Both train on a sample the caller draws and return `ResidualCodebooks`; items are then assigned
greedily by `rq.rq_encode` whatever the method, so one rule encodes the catalog and new uploads.
With a balance target, each level also gets the per-centroid bias of `balance.balance_bias`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import faiss
import numpy as np
from tqdm.auto import tqdm

from codebooks.balance import balanced_kmeans
from codebooks.embeddings import Float32Array
from codebooks.rq import ResidualCodebooks, nearest_centroids

log = logging.getLogger(__name__)

FAISS_MIN_POINTS_PER_CENTROID = 39  # below it faiss warns once per level and per k-means


def train_residual_kmeans(
    sample: Float32Array,
    levels: int,
    size: int,
    *,
    seed: int,
    niter: int = 20,
    balance_target: float | None = None,
    gpu: bool = False,
    progress: bool = False,
) -> ResidualCodebooks:
    """Greedy residual k-means: one faiss k-means of `size` per level, on what is left.

    Level l is seeded with `seed + l`, so a CPU build is deterministic. With `balance_target`,
    each level is refined by balanced k-means (centroids and bias) before the next level sees
    the residual it leaves.
    """
    n, dim = _check_sample(sample, size)
    centroids = np.empty((levels, size, dim), dtype=np.float32)
    bias = np.zeros((levels, size), dtype=np.float32)
    residual = sample.copy()
    min_points = _min_points_per_centroid(n, size)
    for level in _steps(levels, "rq k-means", progress):
        kmeans = faiss.Kmeans(
            dim,
            size,
            niter=niter,
            seed=seed + level,
            gpu=gpu,
            max_points_per_centroid=-(-n // size),  # the caller sampled; faiss must not resample
            min_points_per_centroid=min_points,
            verbose=False,
        )
        kmeans.train(residual)
        centroids[level] = kmeans.centroids
        if balance_target is not None:
            centroids[level], bias[level] = balanced_kmeans(
                residual, centroids[level], target=balance_target
            )
        residual -= centroids[level][nearest_centroids(residual, centroids[level], bias[level])]
    return ResidualCodebooks(centroids=centroids, bias=bias)


# faiss-rq trains with progressive-dimension k-means (a PCA first) from this many rows per dim.
PROGRESSIVE_DIM_MIN_ROWS_PER_DIM = 4


def train_faiss_rq(
    sample: Float32Array,
    levels: int,
    size: int,
    *,
    seed: int,
    beam_size: int = 1,
    niter: int = 20,
    balance_target: float | None = None,
    progress: bool = False,
) -> ResidualCodebooks:
    """faiss's ResidualQuantizer (progressive-dimension k-means, beam search while training).

    `size` must be a power of two. Samples of fewer than 4 rows per dimension train plain
    per-level k-means instead of the progressive-dimension kind. A balance bias, if asked
    for, is fitted level by level on the trained codebooks afterwards, with balanced k-means
    rounds that move the centroids.
    """
    n, dim = _check_sample(sample, size)
    nbits = int(math.log2(size))
    if 2**nbits != size:
        raise ValueError(f"faiss-rq needs a power-of-two number of centroids, got {size}")
    rq = faiss.ResidualQuantizer(dim, levels, nbits)
    if n < PROGRESSIVE_DIM_MIN_ROWS_PER_DIM * dim:  # its PCA needs well more rows than dims
        rq.train_type = faiss.ResidualQuantizer.Train_default
    rq.max_beam_size = beam_size
    rq.cp.seed = seed
    rq.cp.niter = niter
    rq.cp.max_points_per_centroid = -(-n // size)
    rq.cp.min_points_per_centroid = _min_points_per_centroid(n, size)
    with _one_faiss_thread():
        rq.train(sample)
    centroids = faiss.vector_to_array(rq.codebooks).reshape(levels, size, dim).astype(np.float32)
    bias = np.zeros((levels, size), dtype=np.float32)
    if balance_target is not None:
        residual = sample.copy()
        for level in _steps(levels, "rq balance", progress):
            centroids[level], bias[level] = balanced_kmeans(
                residual, centroids[level], target=balance_target
            )
            residual -= centroids[level][nearest_centroids(residual, centroids[level], bias[level])]
    return ResidualCodebooks(centroids=centroids, bias=bias)


@contextmanager
def _one_faiss_thread() -> Iterator[None]:
    """faiss's ResidualQuantizer training gives different codebooks at different OpenMP thread
    counts (it gains almost nothing from a second core on 2-core machines); one thread keeps a
    build reproducible. This is process-wide while it lasts: do not train beside a live index.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _check_sample(sample: Float32Array, size: int) -> tuple[int, int]:
    n, dim = sample.shape
    if n < size:
        raise ValueError(f"RQ training needs at least {size} training items, got {n}")
    return int(n), int(dim)


def _steps(levels: int, desc: str, progress: bool) -> Iterable[int]:
    return tqdm(range(levels), desc=desc, unit="level") if progress else range(levels)


def _min_points_per_centroid(n: int, size: int) -> int:
    """Say once that the sample is small for the codebook (faiss would say it at every level),
    and return the threshold that keeps faiss quiet; it changes no result."""
    if n < FAISS_MIN_POINTS_PER_CENTROID * size:
        log.warning(
            "training %d centroids per level on %d items (faiss advises at least %d): the "
            "codebooks are sparse and deep levels hold about one item per code",
            size,
            n,
            FAISS_MIN_POINTS_PER_CENTROID * size,
        )
    return 1
