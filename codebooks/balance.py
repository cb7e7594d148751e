"""Balanced assignment: a per-centroid prior that gives every centroid a fair share of items.

Plain residual k-means crowds items into a few centroids at some levels (the "hourglass"),
which wastes code space and makes more items collide on their full L-tuple. Sinkhorn's
algorithm finds dual potentials g (one per centroid) such that the soft assignment
softmax_c((g_c - ||r - c||^2) / eps) puts n / Nc items on every centroid. The hard rule
argmin_c ||r - c||^2 - g_c is then close to balanced, and because it only adds a constant per
centroid it stays a per-item rule: the runtime quantizer applies it to one new item exactly as
the build applied it to the catalog (`bias` in `rq.ResidualCodebooks`).
"""

from __future__ import annotations

import numpy as np

from codebooks.embeddings import Float32Array
from codebooks.rq import Float64Array, nearest_centroids

# The entropic temperature, relative to the mean squared distance of items to their nearest
# centroid: small enough that the soft assignment is nearly hard, large enough to converge.
RELATIVE_EPS = 0.05


def logsumexp(a: Float64Array, axis: int) -> Float64Array:
    top = a.max(axis=axis, keepdims=True)
    out: Float64Array = np.log(np.exp(a - top).sum(axis=axis, keepdims=True)) + top
    return out


def squared_distances(residual: Float32Array, centroids: Float32Array) -> Float64Array:
    """n-by-Nc float64 ||r - c||^2."""
    r = residual.astype(np.float64)
    c = centroids.astype(np.float64)
    d: Float64Array = (
        np.einsum("nd,nd->n", r, r)[:, None]
        - 2.0 * (r @ c.T)
        + np.einsum("cd,cd->c", c, c)[None, :]
    )
    return np.maximum(d, 0.0)


def sinkhorn_bias(
    residual: Float32Array, centroids: Float32Array, *, iters: int = 50
) -> Float32Array:
    """Potentials g (Nc,) float32 such that argmin_c d(r, c) - g_c spreads `residual` evenly."""
    cost = squared_distances(residual, centroids)
    n, size = cost.shape
    eps = RELATIVE_EPS * max(float(cost.min(axis=1).mean()), 1e-12)
    log_target = np.log(n / size)
    g = np.zeros(size)
    for _ in range(iters):
        logits = (g[None, :] - cost) / eps
        log_p = logits - logsumexp(logits, axis=1)  # each item's mass sums to 1
        g += eps * (log_target - logsumexp(log_p, axis=0)[0])  # each centroid's mass -> n / Nc
    g -= g.mean()
    return g.astype(np.float32)


def balanced_kmeans_step(
    residual: Float32Array, centroids: Float32Array, *, iters: int = 50
) -> tuple[Float32Array, Float32Array]:
    """One Lloyd step under balanced assignment: new centroids and their bias.

    An empty centroid (possible only with very few items) keeps its old position.
    """
    bias = sinkhorn_bias(residual, centroids, iters=iters)
    codes = nearest_centroids(residual, centroids, bias)
    counts = np.bincount(codes, minlength=len(centroids)).astype(np.float64)
    sums = np.zeros(centroids.shape, dtype=np.float64)
    np.add.at(sums, codes, residual)
    moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centroids)
    new = moved.astype(np.float32)
    return new, sinkhorn_bias(residual, new, iters=iters)
