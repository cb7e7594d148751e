"""Item-to-item pairs mined from behaviour: User2Item (ID-space triggers) and Item2Item Swing.

These pairs are the alignment signal of QARM: two items that the same people engage with should
get close embeddings, whatever their content looks like. Everything here is vectorised (numpy,
scipy.sparse, torch) so a log of a million events is mined in well under a minute on 2 cores;
no Python loop runs over events or pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

from catalogs.content import IntArray
from catalogs.interactions import Interactions

log = logging.getLogger(__name__)

PairArray = npt.NDArray[np.int64]  # (M, 2) catalog rows (trigger, target)


@dataclass(frozen=True)
class PairConfig:
    id_dim: int = 32  # width of the BPR user and item ID embeddings
    id_epochs: int = 5  # BPR passes over the positive events
    id_batch: int = 8192  # BPR (user, positive, negative) triples per step
    id_lr: float = 0.02  # Adam learning rate of the BPR embeddings
    id_l2: float = 1e-5  # L2 penalty on the embeddings of a batch
    window: int = 50  # User2Item: previous positive clicks searched for a trigger (paper: 50)
    swing_alpha: float = 1.0  # Swing smoothing: a user pair's weight is 1 / (alpha + overlap)
    swing_user_alpha: float = 5.0  # user-activity weight (|I_u| + this) ** -0.5
    swing_top_k: int = 10  # Swing neighbours kept per item
    swing_max_users: int = 100  # users sampled per item for Swing (bounds the quadratic term)
    holdout: float = 0.1  # share of the merged pairs held out for evaluation
    seed: int = 0


@dataclass(frozen=True)
class MinedPairs:
    train: PairArray  # (M, 2) undirected pairs for alignment, lower row first
    held_out: PairArray  # (H, 2) pairs kept out of training, for recall@K
    counts: dict[str, int] = field(default_factory=dict)  # pairs from each source and stage


def mine_pairs(
    log_: Interactions,
    n_items: int,
    config: PairConfig,
    *,
    item_embeddings: npt.NDArray[np.float32] | None = None,
) -> MinedPairs:
    """User2Item + Swing pairs of a log, merged, deduplicated, self-pairs dropped, split.

    `item_embeddings` (n_items, d) are ID embeddings to search for User2Item triggers; when
    None, BPR embeddings are trained on the log here.
    """
    positives = log_.positives()
    if item_embeddings is None:
        item_embeddings = train_id_embeddings(positives, n_items, config)
    u2i = user2item_pairs(positives, item_embeddings, window=config.window)
    swing = swing_pairs(
        positives,
        n_items,
        alpha=config.swing_alpha,
        user_alpha=config.swing_user_alpha,
        top_k=config.swing_top_k,
        max_users=config.swing_max_users,
        seed=config.seed,
    )
    merged = merge_pairs(u2i, swing, n_items=n_items)
    train, held_out = split_pairs(merged, config.holdout, seed=config.seed)
    counts = {
        "user2item": len(u2i),
        "swing": len(swing),
        "merged": len(merged),
        "train": len(train),
        "held_out": len(held_out),
    }
    log.info("pairs: %s", counts)
    return MinedPairs(train=train, held_out=held_out, counts=counts)


def future_pairs(
    log_: Interactions, n_items: int, config: PairConfig, seen: MinedPairs
) -> PairArray:
    """Pairs mined on the whole log that the training period's mining (`seen`) did not yield:
    behaviour from after training, cold items included. Recall on them is how an encoder does
    on what comes next; recall on `seen.held_out` is only how it does on the period it saw."""
    every = mine_pairs(log_, n_items, replace(config, holdout=0.0)).train
    known = merge_pairs(seen.train, seen.held_out, n_items=n_items)
    fresh = ~np.isin(every[:, 0] * n_items + every[:, 1], known[:, 0] * n_items + known[:, 1])
    return every[fresh]


def train_id_embeddings(
    positives: Interactions, n_items: int, config: PairConfig
) -> npt.NDArray[np.float32]:
    """BPR matrix factorisation on positive events -> (n_items, id_dim) float32 item embeddings.

    Negatives are drawn uniformly from the catalog (popular items are then negatives less often
    than they are positives, which is what BPR's ranking objective wants).
    """
    gen = torch.Generator().manual_seed(config.seed)
    n_users = positives.n_users
    users = torch.nn.Embedding(n_users, config.id_dim)
    items = torch.nn.Embedding(n_items, config.id_dim)
    torch.nn.init.normal_(users.weight, std=0.1, generator=gen)
    torch.nn.init.normal_(items.weight, std=0.1, generator=gen)
    opt = torch.optim.Adam([users.weight, items.weight], lr=config.id_lr)
    u_all = torch.from_numpy(positives.user)
    i_all = torch.from_numpy(positives.item)
    n = len(u_all)
    for _ in range(config.id_epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.id_batch):
            idx = order[start : start + config.id_batch]
            u, i = u_all[idx], i_all[idx]
            j = torch.randint(0, n_items, (len(idx),), generator=gen)
            eu, ei, ej = users(u), items(i), items(j)  # (B, id_dim) each
            margin = (eu * (ei - ej)).sum(-1)
            l2 = eu.pow(2).sum(-1) + ei.pow(2).sum(-1) + ej.pow(2).sum(-1)
            loss = -torch.nn.functional.logsigmoid(margin).mean() + config.id_l2 * l2.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return items.weight.detach().numpy().astype(np.float32)


def user2item_pairs(
    positives: Interactions,
    item_embeddings: npt.NDArray[np.float32],
    *,
    window: int = 50,
    chunk: int = 8192,
) -> PairArray:
    """(trigger, target) for every positive event that has an earlier positive by the same user.

    The trigger is the item, among the user's previous `window` positive events (log order),
    most similar to the target by cosine of the ID embeddings; ties go to the most recent one.
    Pairs whose trigger is the target itself (a repeated click) are dropped. `positives` must be
    sorted by (user, ts), as `Interactions` are.
    """
    user, item = positives.user, positives.item
    n = len(user)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    emb = item_embeddings / np.maximum(
        np.linalg.norm(item_embeddings, axis=1, keepdims=True), 1e-12
    )
    first = np.r_[0, np.flatnonzero(np.diff(user)) + 1]  # first event of each user's run
    rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))  # position within user
    back = np.arange(1, window + 1)
    rows = np.flatnonzero(rank > 0)
    triggers = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        r = rows[start : start + chunk]
        prev = r[:, None] - back[None, :]  # (C, window) earlier events, most recent first
        valid = back[None, :] <= rank[r][:, None]
        prev_items = item[np.where(valid, prev, r[:, None])]
        sims = np.einsum("cd,cwd->cw", emb[item[r]], emb[prev_items])  # (C, window)
        sims = np.where(valid, sims, -np.inf)
        triggers[start : start + chunk] = prev_items[np.arange(len(r)), np.argmax(sims, axis=1)]
    pairs: PairArray = np.stack([triggers, item[rows]], axis=1)
    kept: PairArray = pairs[pairs[:, 0] != pairs[:, 1]]
    return kept


def swing_scores(
    positives: Interactions,
    n_items: int,
    *,
    alpha: float = 1.0,
    user_alpha: float = 5.0,
    max_users: int = 100,
    seed: int = 0,
) -> sp.csr_matrix:
    """Swing similarity as an (n_items, n_items) sparse matrix with a zero diagonal.

    swing(i, j) = sum over user pairs {u, v} who both engaged with i and j of
    w_u * w_v / (alpha + |I_u & I_v|), with w_u = (|I_u| + user_alpha) ** -0.5.
    Written as S = P^T diag(c) P, where P has one row per user pair (its shared items) and c is
    the pair's weight. At most `max_users` users (a seeded sample) are kept per item, which
    bounds the number of user pairs; the overlap |I_u & I_v| is counted over the kept events.
    """
    user, item = _unique_events(positives)
    activity = np.bincount(user)
    w = (activity + user_alpha) ** -0.5
    user, item = _cap_users_per_item(user, item, max_users, seed)
    left, right = _pairs_within_groups(item)
    pair_item = item[left]
    u, v = user[left], user[right]
    n_users = int(activity.shape[0])
    key = np.minimum(u, v) * n_users + np.maximum(u, v)
    keys, pair_row, overlap = np.unique(key, return_inverse=True, return_counts=True)
    # A pair of users sharing one item contributes only to the diagonal: drop it early.
    keep = overlap[pair_row] >= 2
    kept_keys, pair_row = np.unique(pair_row[keep], return_inverse=True)
    pair_item = pair_item[keep]
    ku, kv = keys[kept_keys] // n_users, keys[kept_keys] % n_users
    c = w[ku] * w[kv] / (alpha + overlap[kept_keys])
    p = sp.csr_matrix(
        (np.ones(len(pair_item)), (pair_row, pair_item)), shape=(len(kept_keys), n_items)
    )
    scores = (p.T @ sp.diags(c) @ p).tocsr()
    scores.setdiag(0)
    scores.eliminate_zeros()
    return scores


def swing_pairs(
    positives: Interactions,
    n_items: int,
    *,
    alpha: float = 1.0,
    user_alpha: float = 5.0,
    top_k: int = 10,
    max_users: int = 100,
    seed: int = 0,
) -> PairArray:
    """(item, neighbour) for each item's `top_k` highest Swing scores (ties: lower row first)."""
    scores = swing_scores(
        positives, n_items, alpha=alpha, user_alpha=user_alpha, max_users=max_users, seed=seed
    )
    return top_k_per_row(scores, top_k)


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> PairArray:
    """(row, col) of the k largest stored entries of every row of a CSR matrix, largest first."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = order[rank < k]
    return np.stack([rows[keep], matrix.indices[keep]], axis=1).astype(np.int64)


def merge_pairs(*sources: PairArray, n_items: int) -> PairArray:
    """Union of pair lists as undirected pairs (lower row first), self-pairs dropped, sorted."""
    pairs = np.concatenate([s.reshape(-1, 2) for s in sources]).astype(np.int64)
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    keys = np.unique(lo[lo != hi] * n_items + hi[lo != hi])
    return np.stack([keys // n_items, keys % n_items], axis=1)


def split_pairs(pairs: PairArray, holdout: float, *, seed: int = 0) -> tuple[PairArray, PairArray]:
    """A seeded random split into (train, held_out) with round(holdout * M) held out."""
    order = np.random.default_rng((seed, 7)).permutation(len(pairs))
    n_out = round(holdout * len(pairs))
    return pairs[np.sort(order[n_out:])], pairs[np.sort(order[:n_out])]


def _unique_events(positives: Interactions) -> tuple[IntArray, IntArray]:
    """Distinct (user, item) pairs of the positive events, sorted by item then user."""
    n_users = max(positives.n_users, 1)
    keys = np.unique(positives.item * n_users + positives.user)
    return (keys % n_users).astype(np.int64), (keys // n_users).astype(np.int64)


def _cap_users_per_item(
    user: IntArray, item: IntArray, max_users: int, seed: int
) -> tuple[IntArray, IntArray]:
    """Keep a seeded random sample of at most `max_users` users per item; sorted by item."""
    key = np.random.default_rng((seed, 11)).random(len(item))
    order = np.lexsort((key, item))
    user, item = user[order], item[order]
    starts = np.r_[0, np.flatnonzero(np.diff(item)) + 1]
    rank = np.arange(len(item)) - np.repeat(starts, np.diff(np.r_[starts, len(item)]))
    keep = rank < max_users
    return user[keep], item[keep]


def _pairs_within_groups(group: IntArray) -> tuple[IntArray, IntArray]:
    """All (a, b) with a < b and group[a] == group[b], for `group` sorted; as index arrays.

    Element a pairs with every later element of its run: it is repeated (run end - a - 1) times
    and its partners are a + 1, a + 2, ..., found with one arange over the repeated segments.
    """
    n = len(group)
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    ends = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))  # run end of each element
    count = ends - np.arange(n) - 1
    left = np.repeat(np.arange(n), count)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(count) - count, count)
    return left, left + 1 + offset
