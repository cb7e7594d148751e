"""Ranking metrics: AUC, UAUC and GAUC, the paper's three columns.

AUC is the probability that a random positive scores above a random negative (ties count half),
computed from average ranks (`scipy.stats.rankdata`), so it equals scikit-learn's
`roc_auc_score`. UAUC and GAUC look at each user on their own, because a ranking model only
ever orders one user's candidates: UAUC is the plain mean of per-user AUCs, GAUC weights each
user's AUC by their sample count. Users whose samples are all of one class have no AUC and are
left out of both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

FloatArray = npt.NDArray[np.float64]


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve of (N,) binary labels and (N,) scores.

    Raises ValueError when only one class is present, as scikit-learn does.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be equal 1-d shapes")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both a positive and a negative sample")
    rank_sum = float(rankdata(s)[y].sum())  # ties: their average rank
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def per_user_auc(
    users: npt.ArrayLike, labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """(AUC, sample count) of every user that has both classes, in ascending user order."""
    u = np.asarray(users)
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not (u.shape == y.shape == s.shape):
        raise ValueError(f"users {u.shape}, labels {y.shape}, scores {s.shape} differ")
    order = np.argsort(u, kind="stable")
    u, y, s = u[order], y[order], s[order]
    cuts = np.flatnonzero(u[1:] != u[:-1]) + 1
    aucs: list[float] = []
    counts: list[float] = []
    for yy, ss in zip(np.split(y, cuts), np.split(s, cuts), strict=True):
        if 0 < yy.sum() < len(yy):
            aucs.append(auc(yy, ss))
            counts.append(float(len(yy)))
    return np.array(aucs, dtype=np.float64), np.array(counts, dtype=np.float64)


def uauc(users: npt.ArrayLike, labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mean per-user AUC over users with both classes; NaN when there is none."""
    aucs, _ = per_user_auc(users, labels, scores)
    return float(aucs.mean()) if len(aucs) else float("nan")


def gauc(users: npt.ArrayLike, labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Per-user AUC weighted by the user's sample count; NaN when no user has both classes."""
    aucs, counts = per_user_auc(users, labels, scores)
    return float((aucs * counts).sum() / counts.sum()) if len(aucs) else float("nan")
