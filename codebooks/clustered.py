"""Clustered synthetic item embeddings, and near-duplicate hard sets, for tests and benchmarks.

Real item embeddings are not uniform noise: they form groups of very different sizes, with
sub-groups inside, and a quantiser that looks fine on uniform data can collapse on them. The
generator draws a two-level mixture on the unit sphere with Zipf-sized groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codebooks.embeddings import Float32Array


@dataclass(frozen=True)
class SyntheticEmbeddings:
    ids: npt.NDArray[np.str_]  # (N,) "item-0000000", ...
    embeddings: Float32Array  # (N, d), L2-normalised
    groups: npt.NDArray[np.int64]  # (N,) top-level cluster of each item


def clustered_embeddings(
    n: int,
    dim: int = 64,
    *,
    groups: int = 64,
    subgroups: int = 8,
    spread: float = 0.35,
    noise: float = 0.25,
    zipf: float = 1.1,
    seed: int = 0,
) -> SyntheticEmbeddings:
    """Draw `n` items from `groups` clusters of `subgroups` sub-clusters each.

    `spread` is the sub-cluster offset and `noise` the item offset, both relative to the unit
    group centre; group sizes follow a Zipf law with exponent `zipf` (a long tail).
    """
    if n < 1 or dim < 2:
        raise ValueError(f"need n >= 1 and dim >= 2, got n={n}, dim={dim}")
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((groups, dim)))
    sub = _unit(centres[:, None, :] + spread * _unit(rng.standard_normal((groups, subgroups, dim))))
    weights = 1.0 / np.arange(1, groups + 1) ** zipf
    group = rng.choice(groups, size=n, p=weights / weights.sum())
    subgroup = rng.integers(0, subgroups, size=n)
    scale = rng.uniform(0.5, 1.5, size=(groups, 1))  # some groups are tighter than others
    offsets = noise * scale[group] * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x = _unit(sub[group, subgroup] + offsets).astype(np.float32)
    ids = np.char.add("item-", np.char.zfill(np.arange(n).astype(str), 7))
    return SyntheticEmbeddings(ids=ids, embeddings=x, groups=group.astype(np.int64))


def near_duplicates(
    base: Float32Array, n: int, *, noise: float, seed: int = 0
) -> tuple[Float32Array, npt.NDArray[np.int64]]:
    """`n` noisy copies of rows of `base` (m-by-d), each row drawn at random: a hard set for
    nearest-neighbour search, where an item's neighbourhood overlaps its source's neighbours'.

    A copy is the unit vector of `base[j] + noise * g / sqrt(d)` with g standard normal, so
    `noise` is the expected length of the offset; answers the copies and their source rows.
    New copies drawn with another seed are queries that look like near-duplicate uploads.
    """
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(base), size=n)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 1 << 18):  # in chunks: float64 offsets for 10M rows would not fit
        rows = source[start : start + (1 << 18)]
        offset = noise * rng.standard_normal((len(rows), dim)) / np.sqrt(dim)
        out[start : start + len(rows)] = _unit(base[rows] + offset)
    return out, source.astype(np.int64)


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out
