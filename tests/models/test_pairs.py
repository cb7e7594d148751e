"""Pair mining against slow, obvious reference implementations on small seeded logs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

from itertools import combinations

import numpy as np

from catalogs.interactions import Interactions
from catalogs.synthetic import SyntheticCatalog
from models.pairs import (
    PairConfig,
    future_pairs,
    merge_pairs,
    mine_pairs,
    split_pairs,
    swing_scores,
    top_k_per_row,
    train_id_embeddings,
    user2item_pairs,
)


def _random_log(n_users: int, n_items: int, n_events: int, seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n_events)
    item = rng.integers(0, n_items, n_events)
    ts = rng.integers(0, 1000, n_events)
    order = np.lexsort((ts, user))
    return Interactions(user[order], item[order], ts[order], np.ones(n_events, dtype=bool))


def _swing_reference(
    events: Interactions, n_items: int, alpha: float, user_alpha: float
) -> np.ndarray:
    items_of: dict[int, set[int]] = {}
    for u, i in zip(events.user.tolist(), events.item.tolist(), strict=True):
        items_of.setdefault(u, set()).add(i)
    w = {u: (len(s) + user_alpha) ** -0.5 for u, s in items_of.items()}
    out = np.zeros((n_items, n_items))
    for u, v in combinations(sorted(items_of), 2):
        shared = items_of[u] & items_of[v]
        for i in shared:
            for j in shared:
                if i != j:
                    out[i, j] += w[u] * w[v] / (alpha + len(shared))
    return out


def test_swing_matches_reference() -> None:
    events = _random_log(30, 12, 200, seed=1)
    got = swing_scores(events, 12, alpha=0.5, user_alpha=2.0, max_users=1000).toarray()
    np.testing.assert_allclose(got, _swing_reference(events, 12, 0.5, 2.0), rtol=1e-10, atol=1e-12)
    assert (np.diag(got) == 0).all()
    np.testing.assert_allclose(got, got.T)


def test_swing_caps_users_per_item() -> None:
    events = _random_log(60, 5, 600, seed=2)
    capped = swing_scores(events, 5, max_users=15)
    full = swing_scores(events, 5, max_users=10_000)
    assert 0 < capped.sum() < full.sum()


def test_top_k_per_row_keeps_the_largest() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((20, 20)) * (rng.random((20, 20)) < 0.4)
    import scipy.sparse as sp

    got = top_k_per_row(sp.csr_matrix(dense), 3)
    for row in range(20):
        cols = got[got[:, 0] == row, 1]
        nonzero = np.flatnonzero(dense[row])
        expected = nonzero[np.argsort(-dense[row, nonzero], kind="stable")][:3]
        np.testing.assert_array_equal(np.sort(cols), np.sort(expected))


def test_user2item_matches_reference() -> None:
    events = _random_log(15, 40, 300, seed=3)
    emb = np.random.default_rng(4).standard_normal((40, 8)).astype(np.float32)
    got = user2item_pairs(events, emb, window=5)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = []
    for p in range(len(events)):
        earlier = [q for q in range(max(0, p - 5), p) if events.user[q] == events.user[p]]
        if not earlier:
            continue
        target = events.item[p]
        sims = [float(unit[events.item[q]] @ unit[target]) for q in earlier]
        best = earlier[::-1][int(np.argmax(sims[::-1]))]  # ties: the most recent
        if events.item[best] != target:
            expected.append((events.item[best], target))
    np.testing.assert_array_equal(got, np.array(expected).reshape(-1, 2))


def test_merge_dedupes_and_drops_self_pairs() -> None:
    a = np.array([[1, 2], [2, 1], [3, 3], [0, 5]])
    b = np.array([[5, 0], [4, 1]])
    np.testing.assert_array_equal(merge_pairs(a, b, n_items=6), [[0, 5], [1, 2], [1, 4]])


def test_split_is_seeded_and_disjoint() -> None:
    pairs = merge_pairs(np.random.default_rng(0).integers(0, 100, (500, 2)), n_items=100)
    train, held = split_pairs(pairs, 0.2, seed=1)
    assert len(held) == round(0.2 * len(pairs))
    assert len(train) + len(held) == len(pairs)
    assert not {tuple(p) for p in train} & {tuple(p) for p in held}
    np.testing.assert_array_equal(split_pairs(pairs, 0.2, seed=1)[1], held)


def test_id_embeddings_and_pairs_follow_business(
    catalog: SyntheticCatalog, events: Interactions
) -> None:
    config = PairConfig(id_epochs=5, id_batch=1024)
    emb = train_id_embeddings(events.positives(), len(catalog), config)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = catalog.business[:, None] == catalog.business[None, :]
    assert sims[same].mean() > sims[~same].mean() + 0.2

    mined = mine_pairs(events, len(catalog), config, item_embeddings=emb)
    pairs = np.concatenate([mined.train, mined.held_out])
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert mined.counts["merged"] == len(pairs) > 500
    same_business = (catalog.business[pairs[:, 0]] == catalog.business[pairs[:, 1]]).mean()
    same_style = (catalog.style[pairs[:, 0]] == catalog.style[pairs[:, 1]]).mean()
    assert same_business > 0.8 > same_style  # behaviour follows business, not looks


def test_future_pairs_are_new_behaviour_only(
    catalog: SyntheticCatalog, events: Interactions
) -> None:
    config = PairConfig(id_epochs=1)
    past = events.take(events.ts < np.median(events.ts))
    seen = mine_pairs(past, len(catalog), config)
    future = future_pairs(events, len(catalog), config, seen)
    assert len(future) > 0
    known = {tuple(p) for p in np.concatenate([seen.train, seen.held_out]).tolist()}
    assert not known & {tuple(p) for p in future.tolist()}
    assert (future[:, 0] < future[:, 1]).all()  # undirected, lower row first
