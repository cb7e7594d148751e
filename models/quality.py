"""How good item embeddings are for the pipeline's report: recall of held-out item pairs,
neighbour purity by group, the confounder gap of the synthetic catalog, and the before/after
map of the paper's Figure 6. Nearest neighbours come from faiss (exact inner product)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from catalogs.content import IntArray
from catalogs.synthetic import SyntheticCatalog
from codebooks.report import save_figure
from models.pairs import PairArray


def nearest_others(
    embeddings: npt.NDArray[np.float32], rows: IntArray, k: int
) -> npt.NDArray[np.int64]:
    """(len(rows), k) nearest catalog rows of each row by inner product, nearest first, the
    row itself left out (when ties hide it, the (k+1)-th neighbour is dropped instead)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    k = min(k, len(x) - 1)
    _, found = faiss.knn(x[rows], x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    keep = found != np.asarray(rows)[:, None]
    keep[keep.all(axis=1), -1] = False
    out: npt.NDArray[np.int64] = found[keep].reshape(len(rows), k).astype(np.int64)
    return out


def pair_recall(
    embeddings: npt.NDArray[np.float32], pairs: PairArray, ks: tuple[int, ...] = (10, 50)
) -> dict[str, float]:
    """Share of held-out pairs (a, b) whose b is among a's k nearest items (a itself excluded),
    counted in both directions: {"recall@10": ..., "recall@50": ...}."""
    if len(pairs) == 0:
        return {f"recall@{k}": float("nan") for k in ks}
    queries = np.concatenate([pairs[:, 0], pairs[:, 1]])
    targets = np.concatenate([pairs[:, 1], pairs[:, 0]])
    top = nearest_others(embeddings, queries, max(ks))
    hit = top == targets[:, None]  # at most one True per row
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), top.shape[1])
    return {f"recall@{k}": float((rank < k).mean()) for k in ks}


def neighbour_purity(embeddings: npt.NDArray[np.float32], groups: IntArray, k: int = 10) -> float:
    """Mean share of an item's k nearest items (itself excluded) that share its group."""
    top = nearest_others(embeddings, np.arange(len(embeddings)), k)
    return float((groups[top] == groups[:, None]).mean())


def confounder_gap(
    emb: npt.NDArray[np.float32], catalog: SyntheticCatalog, max_items: int = 3000
) -> dict[str, float]:
    """Figure 6 in numbers: mean cosine of item pairs that share a business but not a style
    ("bought alike, look different") and of pairs that share a style but not a business ("look
    alike, bought by others"). Content puts the second above the first; alignment should not."""
    rows = np.random.default_rng(0).permutation(len(emb))[:max_items]
    x, b, s = emb[rows], catalog.business[rows], catalog.style[rows]
    sims = x @ x.T
    same_b, same_s = b[:, None] == b[None, :], s[:, None] == s[None, :]
    return {
        "cos_same_business_other_style": float(sims[same_b & ~same_s].mean()),
        "cos_same_style_other_business": float(sims[same_s & ~same_b].mean()),
    }


def plot_maps(
    before: npt.NDArray[np.float32],
    after: npt.NDArray[np.float32],
    groups: IntArray,
    path: Path,
    *,
    title: str,
    max_points: int = 3000,
    seed: int = 0,
) -> Path:
    """Two PCA maps side by side, items coloured by group: the paper's Figure 6, before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(before), size=min(max_points, len(before)), replace=False))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, x, name in ((axes[0], before, "before alignment"), (axes[1], after, "after alignment")):
        xy = _pca2(x[rows])
        ax.scatter(xy[:, 0], xy[:, 1], c=groups[rows] % 20, cmap="tab20", s=4, alpha=0.7)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=110)


def _pca2(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    centred = x.astype(np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out: npt.NDArray[np.float64] = centred @ vt[:2].T
    return out
