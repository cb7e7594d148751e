"""Balanced assignment: a per-centroid prior that gives every centroid a fair share of items.

Plain residual k-means crowds items into a few centroids at some levels (the "hourglass"),
which wastes code space. Sinkhorn's algorithm finds dual potentials g (one per centroid) such
that the soft assignment softmax_c((g_c - ||r - c||^2) / eps) puts n / Nc items on every
centroid. The hard rule argmin_c ||r - c||^2 - alpha * g_c is then close to balanced at
alpha = 1, and because it only adds a constant per centroid it stays a per-item rule: the
runtime quantizer applies it to one new item exactly as the build applied it to the catalog
(`bias` in `rq.ResidualCodebooks`).

Balance costs reconstruction error, so the build takes the smallest alpha (by bisection) whose
level perplexity reaches `target` x Nc on the training sample, and no more; and it moves each
centroid to the mean of the items the balanced rule gives it (balanced k-means), which wins back
much of the error that the bias alone would cost.
"""

from __future__ import annotations

import numpy as np

from codebooks.embeddings import Float32Array
from codebooks.metrics import perplexity
from codebooks.rq import Float64Array, nearest_centroids

# The entropic temperature, relative to the mean squared distance of items to their nearest
# centroid: small enough that the soft assignment is nearly hard, large enough to converge.
RELATIVE_EPS = 0.05
SINKHORN_ITERS = 60
SINKHORN_ITEMS = 16384  # potentials are fitted on at most this many evenly spaced rows
BISECTION_STEPS = 8
BALANCE_ROUNDS = 3  # Lloyd rounds under the balanced rule, per level


def squared_distances(residual: Float32Array, centroids: Float32Array) -> Float32Array:
    """n-by-Nc float32 ||r - c||^2 (clipped at 0)."""
    d = (
        np.einsum("nd,nd->n", residual, residual)[:, None]
        - 2.0 * (residual @ centroids.T)
        + np.einsum("cd,cd->c", centroids, centroids)[None, :]
    )
    out: Float32Array = np.maximum(d, 0.0, dtype=np.float32)
    return out


def _logsumexp(a: Float32Array, axis: int) -> Float32Array:
    top = a.max(axis=axis, keepdims=True)
    out: Float32Array = np.log(np.exp(a - top).sum(axis=axis, keepdims=True)) + top
    return out


def sinkhorn_potentials(cost: Float32Array, iters: int = SINKHORN_ITERS) -> Float64Array:
    """n-by-Nc costs -> potentials g (Nc,) that give every column mass n / Nc (mean 0)."""
    n, size = cost.shape
    eps = RELATIVE_EPS * max(float(cost.min(axis=1).mean()), 1e-12)
    log_target = np.float32(np.log(n / size))
    g = np.zeros(size, dtype=np.float32)
    scaled = -cost / np.float32(eps)
    for _ in range(iters):
        logits = scaled + g[None, :] / np.float32(eps)
        log_p = logits - _logsumexp(logits, axis=1)  # each item's mass sums to 1
        g += np.float32(eps) * (log_target - _logsumexp(log_p, axis=0)[0])
    out: Float64Array = (g - g.mean()).astype(np.float64)
    return out


def balance_bias(residual: Float32Array, centroids: Float32Array, *, target: float) -> Float32Array:
    """The smallest-alpha bias alpha * g whose perplexity reaches target x Nc.

    Potentials and alpha are fitted on at most SINKHORN_ITEMS evenly spaced rows of `residual`.
    Returns zeros when plain assignment already reaches the target; alpha = 1 when none does.
    """
    size = len(centroids)
    goal = target * size
    rows = residual[:: max(1, len(residual) // SINKHORN_ITEMS)]

    def spread(bias: Float32Array) -> float:
        return perplexity(nearest_centroids(rows, centroids, bias), size)

    zero = np.zeros(size, dtype=np.float32)
    if spread(zero) >= goal:
        return zero
    g = sinkhorn_potentials(squared_distances(rows, centroids))
    if spread(g.astype(np.float32)) < goal:
        return g.astype(np.float32)
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if spread((mid * g).astype(np.float32)) >= goal:
            high = mid
        else:
            low = mid
    out: Float32Array = (high * g).astype(np.float32)
    return out


def balanced_kmeans(
    residual: Float32Array, centroids: Float32Array, *, target: float, rounds: int = BALANCE_ROUNDS
) -> tuple[Float32Array, Float32Array]:
    """Lloyd rounds under the balanced rule: (centroids (Nc, d), bias (Nc,)) for one level.

    A centroid that the rule leaves empty keeps its place.
    """
    moved = centroids.copy()
    for _ in range(rounds):
        codes = nearest_centroids(residual, moved, balance_bias(residual, moved, target=target))
        counts = np.bincount(codes, minlength=len(moved))
        sums = np.zeros(moved.shape, dtype=np.float64)
        np.add.at(sums, codes, residual)
        filled = counts > 0
        moved[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return moved, balance_bias(residual, moved, target=target)
