"""RQ codes: L levels of residual k-means, each level quantising what the previous ones left.

An item's RQ code is the nearest centroid at each level; level l quantises the residual
r_l = x - sum_{j<l} C_j[code_j]. Training lives in `rq_train`; assignment covers every item
through `rq_encode`, the one function the build and the runtime quantizer share, so a catalog
item re-encoded from its bundle gets exactly the code the build gave it.

Nearest-centroid decisions are those of float64 arithmetic: float32 rounding depends on the BLAS
kernel and the batch's shape, and an item must not change code because of the batch it came in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codebooks.embeddings import Float32Array

Int32Array = npt.NDArray[np.int32]
Float64Array = npt.NDArray[np.float64]

# Rows scored at once in `nearest_centroids`: bounds the score matrix (rows x Nc).
ASSIGN_CHUNK = 16384
# Two float32 scores closer than this (times the vectors' scale) may be in the wrong order;
# a few times float32's worst-case error for d <= 256 (typical errors are far smaller).
FLOAT32_MARGIN = 1e-4


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

    The answer is the float64 argmin (ties to the lowest index), so it does not depend on the
    batch a row came in. Scores are computed in float32 first; only rows whose two best scores
    are closer than float32's error bound are scored again in float64.
    """
    c64 = centroids.astype(np.float64)
    offset = np.einsum("cd,cd->c", c64, c64)
    if bias is not None:
        offset = offset - bias.astype(np.float64)
    c32, offset32 = centroids.astype(np.float32), offset.astype(np.float32)
    # float32 dot products of length d err by at most about d * 2^-24 * |r| |c| each.
    error_scale = FLOAT32_MARGIN * (
        float(np.sqrt(offset.clip(0).max())) + float(np.abs(offset).max())
    )
    out = np.empty(len(residual), dtype=np.int32)
    for start in range(0, len(residual), ASSIGN_CHUNK):
        block = residual[start : start + ASSIGN_CHUNK]
        scores = offset32[None, :] - 2.0 * (block @ c32.T)
        codes = np.argmin(scores, axis=1).astype(np.int32)
        if scores.shape[1] > 1:
            two = np.partition(scores, 1, axis=1)
            norms = np.sqrt(np.einsum("nd,nd->n", block, block, dtype=np.float64))
            close = np.flatnonzero(two[:, 1] - two[:, 0] <= error_scale * (1.0 + norms))
            if len(close):
                exact = offset[None, :] - 2.0 * (block[close].astype(np.float64) @ c64.T)
                codes[close] = np.argmin(exact, axis=1)
        out[start : start + ASSIGN_CHUNK] = codes
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
