"""Build metrics: how well the codes use their codebooks and how often items share a code.

Definitions (they are what the manifest's numbers mean):
- `mse` per level: mean over items of ||x - sum of the chosen centroids up to that level||^2.
- `used`: centroids chosen by at least one item; `utilisation` = used / Nc.
- `perplexity`: exp of the entropy of the level's code distribution; Nc when perfectly even,
  1 when every item takes the same centroid.
- `gini`: Gini coefficient of the per-centroid item counts (0 even, -> 1 concentrated).
- `hourglass`: a middle level (neither first nor last) whose perplexity is below 0.8 x the
  smaller of (the highest perplexity before it, the highest after it): a valley in the profile.
- collisions of full L-tuples: `duplicate_rate` = (items - distinct tuples) / items, and
  `shared_rate` = share of items whose tuple is also some other item's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from codebooks.rq import Int32Array

HOURGLASS_RATIO = 0.8


class LevelMetrics(BaseModel):
    level: int  # 1-based, as in the paper
    mse: float
    used: int
    utilisation: float
    perplexity: float
    gini: float
    hourglass: bool


class CollisionMetrics(BaseModel):
    items: int
    distinct_tuples: int
    duplicate_rate: float
    shared_rate: float
    shared_rate_by_prefix: list[float]  # index l-1: shared rate of the first l codes


def perplexity(codes: Int32Array, size: int) -> float:
    """exp(entropy) of one level's (N,) codes over `size` centroids."""
    counts = np.bincount(codes, minlength=size)
    p = counts[counts > 0] / len(codes)
    return float(np.exp(-(p * np.log(p)).sum()))


def level_metrics(
    codes: Int32Array, size: int, level_mse: npt.NDArray[np.float64]
) -> list[LevelMetrics]:
    """(N, L) codes with Nc = `size` -> one LevelMetrics per level."""
    rows = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=size).astype(np.float64)
        rows.append(
            {
                "level": level + 1,
                "mse": float(level_mse[level]),
                "used": int((counts > 0).sum()),
                "utilisation": float((counts > 0).sum() / size),
                "perplexity": perplexity(codes[:, level], size),
                "gini": gini(counts),
            }
        )
    flags = hourglass_flags([r["perplexity"] for r in rows])
    return [LevelMetrics(**r, hourglass=f) for r, f in zip(rows, flags, strict=True)]


def gini(counts: npt.NDArray[np.float64]) -> float:
    """Gini coefficient of non-negative counts (mean absolute difference / twice the mean)."""
    if counts.sum() == 0:
        return 0.0
    x = np.sort(counts)
    n = len(x)
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def hourglass_flags(profile: list[float]) -> list[bool]:
    """Per level of a perplexity profile: is it a valley (see the module's definition)?"""
    flags = [False] * len(profile)
    for i in range(1, len(profile) - 1):
        around = min(max(profile[:i]), max(profile[i + 1 :]))
        flags[i] = profile[i] < HOURGLASS_RATIO * around
    return flags


def tuple_keys(codes: Int32Array) -> npt.NDArray[np.generic]:
    """One hashable, sortable key per row of (N, L) codes (rows equal <=> keys equal)."""
    rows = np.ascontiguousarray(codes)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def shared_rate(codes: Int32Array) -> float:
    """Share of items whose code tuple is also another item's."""
    _, inverse, counts = np.unique(tuple_keys(codes), return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def collision_metrics(codes: Int32Array) -> CollisionMetrics:
    n = len(codes)
    distinct = len(np.unique(tuple_keys(codes)))
    return CollisionMetrics(
        items=n,
        distinct_tuples=distinct,
        duplicate_rate=(n - distinct) / n,
        shared_rate=shared_rate(codes),
        shared_rate_by_prefix=[shared_rate(codes[:, :p]) for p in range(1, codes.shape[1] + 1)],
    )
