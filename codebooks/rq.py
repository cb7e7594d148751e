"""RQ codes: L levels of residual k-means, each level quantising what the previous ones left.

An item's RQ code is the nearest centroid at each level; level l quantises the residual
r_l = x - sum_{j<l} C_j[code_j]. Training runs faiss k-means on a sample; assignment covers
every item through `rq_encode`, the one function the build and the runtime quantizer share, so a
catalog item re-encoded from its bundle gets exactly the code the build gave it.

Nearest-centroid scores are computed in float64: float32 rounding depends on the BLAS kernel
and batch shape, and an item must not change code because of the batch it arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from codebooks.embeddings import Float32Array

Int32Array = npt.NDArray[np.int32]
Float64Array = npt.NDArray[np.float64]

# Rows scored at once in `nearest_centroids`: bounds the float64 score matrix (rows x Nc).
ASSIGN_CHUNK = 16384


@dataclass(frozen=True)
class ResidualCodebooks:
    """The frozen RQ codebooks: `centroids` (L, Nc, d) float32, `bias` (L, Nc) float32.

    `bias` is subtracted from the squared distance at assignment (a per-centroid prior); it is
    all zeros for plain nearest-centroid assignment.
    """

    centroids: Float32Array
    bias: Float32Array

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def size(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[2])


@dataclass(frozen=True)
class RQEncoding:
    codes: Int32Array  # (N, L), each < Nc
    level_mse: Float64Array  # (L,) mean squared L2 norm of the residual after each level


def nearest_centroids(
    residual: Float32Array, centroids: Float32Array, bias: Float32Array | None = None
) -> Int32Array:
    """n-by-d residuals, Nc-by-d centroids -> n int32: argmin_c ||r - c||^2 - bias_c.

    Ties go to the lowest centroid index.
    """
    c64 = centroids.astype(np.float64)
    offset = np.einsum("cd,cd->c", c64, c64)
    if bias is not None:
        offset = offset - bias.astype(np.float64)
    out = np.empty(len(residual), dtype=np.int32)
    for start in range(0, len(residual), ASSIGN_CHUNK):
        block = residual[start : start + ASSIGN_CHUNK].astype(np.float64)
        scores = offset[None, :] - 2.0 * (block @ c64.T)
        out[start : start + ASSIGN_CHUNK] = np.argmin(scores, axis=1)
    return out


def rq_encode(x: Float32Array, books: ResidualCodebooks) -> RQEncoding:
    """n-by-d float32 -> RQ codes (n, L) int32 and the residual MSE after each level."""
    residual = x.copy()
    codes = np.empty((len(x), books.levels), dtype=np.int32)
    level_mse = np.empty(books.levels, dtype=np.float64)
    for level in range(books.levels):
        codes[:, level] = nearest_centroids(residual, books.centroids[level], books.bias[level])
        residual -= books.centroids[level][codes[:, level]]
        level_mse[level] = float(
            np.mean(np.einsum("nd,nd->n", residual, residual, dtype=np.float64))
        )
    return RQEncoding(codes=codes, level_mse=level_mse)


def rq_decode(codes: Int32Array, books: ResidualCodebooks) -> Float32Array:
    """(n, L) codes -> n-by-d reconstruction, the sum of each level's chosen centroid."""
    out = np.zeros((len(codes), books.dim), dtype=np.float32)
    for level in range(books.levels):
        out += books.centroids[level][codes[:, level]]
    return out


def train_residual_kmeans(
    sample: Float32Array,
    levels: int,
    size: int,
    *,
    seed: int,
    niter: int = 20,
    gpu: bool = False,
    progress: bool = False,
) -> ResidualCodebooks:
    """Greedy residual k-means (the QARM paper's RQ): one faiss k-means of `size` per level.

    `sample` is the training set (already subsampled by the caller); level l is seeded with
    `seed + l`, so a CPU build is deterministic. Needs at least `size` rows.
    """
    n, dim = sample.shape
    if n < size:
        raise ValueError(f"residual k-means needs at least {size} training items, got {n}")
    centroids = np.empty((levels, size, dim), dtype=np.float32)
    residual = sample.copy()
    steps: Iterable[int] = range(levels)
    if progress:
        steps = tqdm(steps, desc="rq k-means", unit="level")
    for level in steps:
        kmeans = faiss.Kmeans(
            dim,
            size,
            niter=niter,
            seed=seed + level,
            gpu=gpu,
            max_points_per_centroid=-(-n // size),  # the caller sampled; faiss must not resample
            verbose=False,
        )
        kmeans.train(residual)
        centroids[level] = kmeans.centroids
        codes = nearest_centroids(residual, centroids[level])
        residual -= centroids[level][codes]
    return ResidualCodebooks(centroids=centroids, bias=np.zeros((levels, size), dtype=np.float32))
